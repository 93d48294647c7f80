//! FPM framing, as zebra's `dplane_fpm_nl` writes it: a 4-byte header (version, type, and the
//! big-endian length of the whole frame) and one or two netlink messages. Sans I/O: bytes
//! go in as they arrive, whole frames come out.

use super::FpmError;

/// The header's size, counted in its own length.
pub const HEADER: usize = 4;
/// `msg_type` of a netlink payload (2 is protobuf, which Debian's FRR is built without).
pub const TYPE_NETLINK: u8 = 1;
/// zebra asserts a frame fits its u16 length; fpmsyncd's own 16 KiB cap would drop the
/// largest ECMP routes zebra legitimately sends.
pub const MAX_FRAME: usize = u16::MAX as usize;

/// One frame's payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub msg_type: u8,
    pub payload: Vec<u8>,
}

/// Bytes from zebra, cut into frames.
#[derive(Debug, Default)]
pub struct Frames {
    buffer: Vec<u8>,
}

impl Frames {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds bytes read from the connection.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next whole frame, `None` until one has arrived. A malformed header is an error:
    /// the stream cannot be resynchronised, so the connection must be dropped (zebra
    /// reconnects and replays its RIB, as fpmsyncd's "Malformed FPM message" does).
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FpmError> {
        if self.buffer.len() < HEADER {
            return Ok(None);
        }
        let msg_type = self.buffer[1];
        let length = usize::from(u16::from_be_bytes([self.buffer[2], self.buffer[3]]));
        if msg_type == 0 || length < HEADER || length % 4 != 0 {
            return Err(FpmError::Malformed(format!(
                "FPM header: type {msg_type}, length {length} (a length is a multiple of 4, at least 4)"
            )));
        }
        if self.buffer.len() < length {
            return Ok(None);
        }
        let payload = self.buffer[HEADER..length].to_vec();
        self.buffer.drain(..length);
        Ok(Some(Frame { msg_type, payload }))
    }

    /// Bytes held for a frame still arriving.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }
}

/// A frame around `payload`, as zebra writes it (for tests and the benchmark's FPM client).
pub fn encode(payload: &[u8]) -> Vec<u8> {
    let length = u16::try_from(payload.len() + HEADER).expect("an FPM frame fits 64 KiB");
    let mut frame = vec![1, TYPE_NETLINK];
    frame.extend_from_slice(&length.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_cut_from_any_split_of_the_stream() {
        let one = encode(&[1, 2, 3, 4]);
        let two = encode(&[5, 6, 7, 8, 9, 10, 11, 12]);
        let stream: Vec<u8> = one.iter().chain(two.iter()).copied().collect();
        for cut in 0..stream.len() {
            let mut frames = Frames::new();
            frames.push(&stream[..cut]);
            let mut got = Vec::new();
            while let Some(frame) = frames.next_frame().unwrap() {
                got.push(frame.payload);
            }
            frames.push(&stream[cut..]);
            while let Some(frame) = frames.next_frame().unwrap() {
                got.push(frame.payload);
            }
            assert_eq!(got, vec![vec![1, 2, 3, 4], vec![5, 6, 7, 8, 9, 10, 11, 12]], "cut at {cut}");
            assert_eq!(frames.buffered(), 0);
        }
    }

    #[test]
    fn a_malformed_header_is_refused() {
        for header in [[1u8, 0, 0, 8], [1, 1, 0, 2], [1, 1, 0, 6]] {
            let mut frames = Frames::new();
            frames.push(&header);
            let error = frames.next_frame().unwrap_err().to_string();
            assert!(error.contains("FPM header"), "{error}");
        }
    }
}
