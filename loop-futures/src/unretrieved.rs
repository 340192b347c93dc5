//! Which task outputs count as an error nobody retrieved.
//!
//! asyncio reports "Task exception was never retrieved" for a task that
//! ended with an exception nobody looked at. A Rust task's failure is often
//! its *output*: `Ok(Err(e))` from a body returning `Result<(), E>`. A task's
//! output type is generic, and Rust cannot look inside an arbitrary `T`
//! without specialization, so the check is a short list of types, tried by
//! [`Any`] downcast when a finished task's last handle goes (never on the
//! hot path):
//!
//! `Result<(), E>` with `E` one of [`LoopError`], [`io::Error`],
//! `Box<dyn Error>`, `Box<dyn Error + Send + Sync>`, `String` and
//! `&'static str`.
//!
//! These are the outputs of fire-and-forget tasks (a connection handler, a
//! background job), the ones whose errors would otherwise vanish. Other
//! output types are not inspected: await the task, or log in the body. A
//! `Cancelled` error is not reported (asyncio does not report a
//! `CancelledError` either).

use std::any::Any;
use std::error::Error;
use std::io;

use crate::{ErrorKind, LoopError};

/// The error `output` holds, if its type is one of the list above and it
/// holds one (a cancellation excepted).
pub(crate) fn output_failure<T: 'static>(output: &T) -> Option<LoopError> {
    let any: &dyn Any = output;
    if let Some(Err(e)) = any.downcast_ref::<Result<(), LoopError>>() {
        return (!e.is_cancelled()).then(|| e.clone());
    }
    if let Some(Err(e)) = any.downcast_ref::<Result<(), io::Error>>() {
        if LoopError::of_io(e).is_some_and(LoopError::is_cancelled) {
            return None;
        }
        return Some(LoopError::new(ErrorKind::Io, e.to_string()));
    }
    let text = if let Some(Err(e)) = any.downcast_ref::<Result<(), Box<dyn Error>>>() {
        e.to_string()
    } else if let Some(Err(e)) = any.downcast_ref::<Result<(), Box<dyn Error + Send + Sync>>>() {
        e.to_string()
    } else if let Some(Err(e)) = any.downcast_ref::<Result<(), String>>() {
        e.clone()
    } else if let Some(Err(e)) = any.downcast_ref::<Result<(), &'static str>>() {
        (*e).to_string()
    } else {
        return None;
    };
    Some(LoopError::new(ErrorKind::Exception, text))
}
