//! The minimal program of the README: callbacks, a timer, a task and an
//! executor job on one loop.

use aioloop::prelude::*;
use std::time::Duration;

fn main() -> Result<(), LoopError> {
    let lp = EventLoop::new()?;
    let lp2 = lp.clone();
    lp.call_soon(|| println!("called soon"))?;
    lp.call_later(Duration::from_millis(10), || println!("10 ms later"))?;
    let sum = lp.run_until_complete(async move {
        let task = lp2.create_task(async { 20 + 1 })?;
        let blocking = lp2.run_in_executor(|| 21)?;
        lp2.sleep(Duration::from_millis(20)).await?; // the timer fires meanwhile
        Ok::<_, LoopError>(task.await? + blocking.await?)
    })??;
    assert_eq!(sum, 42);
    lp.close()
}
