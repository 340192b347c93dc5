//! The minimal program of the README: `aioloop::run` (asyncio.run) with
//! callbacks, a timer, a task and an executor job on its loop.

use aioloop::prelude::*;
use std::time::Duration;

fn main() -> Result<(), LoopError> {
    // asyncio.run(main()): a new loop, `main` as a task, then the shutdown.
    let sum = aioloop::run(|lp| async move {
        lp.call_soon(|| println!("called soon"))?;
        lp.call_later(Duration::from_millis(10), || println!("10 ms later"))?;
        let task = lp.create_task(async { 20 + 1 })?;
        let blocking = lp.run_in_executor(|| 21)?;
        lp.sleep(Duration::from_millis(20)).await?; // the timer fires meanwhile
        Ok::<_, LoopError>(task.await? + blocking.await?)
    })?;
    assert_eq!(sum, 42);
    Ok(())
}
