//! One rendering of error chains. Errors never repeat their source in their own message (a
//! `#[source]` is a field, not text), so wherever an error becomes a line for a person, its
//! causes are joined here, each once.

use std::error::Error;

/// `err: cause: cause`.
pub fn chain(err: &dyn Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    #[test]
    fn causes_follow_each_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let err = crate::state::fsutil::FileError::Read { path: "/x/state.json".into(), source: io };
        assert_eq!(super::chain(&err), "cannot read /x/state.json: no such file");
    }
}
