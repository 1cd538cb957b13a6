//! The token a connection authenticated with. The server runs each call of a connection
//! on a blocking-pool thread: it puts the connection's token in this thread-local for the
//! call ([`run_with`]) and takes it back after, so that `authenticate` can change it.

use std::cell::RefCell;

thread_local! {
    static TOKEN: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Runs `call` with `token` as the connection's; returns its result and the token after.
pub fn run_with<T>(token: Option<String>, call: impl FnOnce() -> T) -> (T, Option<String>) {
    TOKEN.with(|slot| *slot.borrow_mut() = token);
    let result = call();
    let token = TOKEN.with(|slot| slot.borrow_mut().take());
    (result, token)
}

/// The token of the connection whose call runs on this thread.
pub fn token() -> Option<String> {
    TOKEN.with(|slot| slot.borrow().clone())
}

/// Makes `token` the connection's from its next call on.
pub fn set_token(token: Option<String>) {
    TOKEN.with(|slot| *slot.borrow_mut() = token);
}
