//! Server-sent events as the contract frames them (CONTRACT.md §5.2): `data: <json>\n\n`, and
//! a final `data: [DONE]\n\n`.

use bytes::{BufMut, Bytes, BytesMut};

/// The event that ends a successful stream.
pub const DONE: &[u8] = b"data: [DONE]\n\n";

/// Frames one JSON payload as an event.
///
/// ```
/// assert_eq!(&chatgate::sse::data(b"{}")[..], b"data: {}\n\n");
/// ```
pub fn data(json: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(json.len() + 8);
    b.put_slice(b"data: ");
    b.put_slice(json);
    b.put_slice(b"\n\n");
    b.freeze()
}
