//! An error and its sources on one line. A leaf module: `error`,
//! `credentials` and `keys` all use it, and it uses none of them.

/// For messages and logs.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}
