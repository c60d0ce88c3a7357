//! Packet framing: the 4-byte header (3-byte little-endian payload length,
//! 1-byte sequence id) and the splitting of payloads of 16 MiB - 1 bytes or
//! more into several physical packets.
//!
//! Reference: <https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_basic_packets.html>
//! and <https://mariadb.com/kb/en/0-packet/>.
//!
//! Everything here works on borrowed buffers and never allocates (except
//! [`join_payload`] and [`write_packet`], which append to a caller's `Vec`),
//! because it runs for every packet the funnel forwards.

use super::{ProtocolError, Result};

pub const HEADER_LEN: usize = 4;
/// Largest payload of one physical packet. A packet of exactly this length
/// means the logical message continues in the next packet.
pub const MAX_PAYLOAD_LEN: usize = 0xFF_FFFF;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub payload_len: usize,
    pub seq: u8,
}

impl FrameHeader {
    /// Header plus payload: the bytes this physical packet occupies.
    pub fn total_len(&self) -> usize {
        self.payload_len.saturating_add(HEADER_LEN)
    }

    /// True if the next physical packet continues this logical message.
    pub fn is_continued(&self) -> bool {
        self.payload_len == MAX_PAYLOAD_LEN
    }

    /// Appends the 4 header bytes.
    pub fn write(&self, out: &mut Vec<u8>) {
        let len = (self.payload_len.min(MAX_PAYLOAD_LEN) as u32).to_le_bytes();
        out.extend_from_slice(&[len[0], len[1], len[2], self.seq]);
    }
}

/// Decodes the header at the start of `buf`; `None` if fewer than 4 bytes.
pub fn peek_header(buf: &[u8]) -> Option<FrameHeader> {
    match buf {
        [a, b, c, seq, ..] => Some(FrameHeader {
            payload_len: u32::from_le_bytes([*a, *b, *c, 0]) as usize,
            seq: *seq,
        }),
        _ => None,
    }
}

/// Follows the client's side of a `LOAD DATA LOCAL INFILE` exchange (file
/// contents in packets of any size, ended by an empty packet) as its bytes
/// pass through, so they can be relayed as they arrive instead of waiting
/// for whole packets, which may be bigger than any input bound.
/// An empty packet right after a full 16 MiB one only ends that logical
/// packet, not the upload.
/// <https://mariadb.com/kb/en/local_infile-packet/>
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UploadFramer {
    /// Payload bytes of the current packet not yet seen.
    frame_left: usize,
    /// The previous packet was full size: the next one continues it.
    continued: bool,
}

impl UploadFramer {
    /// How many bytes at the start of `buf` belong to the upload and can be
    /// relayed now, and whether they complete it (the empty packet
    /// included). A partial header is left for the next call. Each header
    /// passed has `seq_shift` added to its sequence id (the receiver may
    /// number the exchange differently).
    pub fn advance(&mut self, buf: &mut [u8], seq_shift: u8) -> (usize, bool) {
        let mut pos = 0;
        loop {
            if self.frame_left > 0 {
                let n = self.frame_left.min(buf.len() - pos);
                pos += n;
                self.frame_left -= n;
                if self.frame_left > 0 {
                    return (pos, false);
                }
            }
            let Some(h) = peek_header(&buf[pos..]) else {
                return (pos, false);
            };
            if seq_shift != 0 {
                buf[pos + 3] = h.seq.wrapping_add(seq_shift);
            }
            pos += HEADER_LEN;
            if h.payload_len == 0 && !self.continued {
                return (pos, true);
            }
            self.continued = h.is_continued();
            self.frame_left = h.payload_len;
        }
    }
}

/// The first complete physical packet in `buf` as (header, payload), or
/// `None` if `buf` does not hold all of it yet.
pub fn next_frame(buf: &[u8]) -> Option<(FrameHeader, &[u8])> {
    let h = peek_header(buf)?;
    let payload = buf.get(HEADER_LEN..h.total_len())?;
    Some((h, payload))
}

/// Where one logical message (one or more physical packets) lies at the
/// start of a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageSpan {
    /// Sequence id of the first physical packet.
    pub first_seq: u8,
    /// Sequence id of the last physical packet; the next packet in this
    /// exchange uses `last_seq.wrapping_add(1)`.
    pub last_seq: u8,
    /// Length of the joined payload.
    pub payload_len: usize,
    /// Bytes the message occupies in the buffer, headers included.
    pub wire_len: usize,
    /// Number of physical packets.
    pub packets: usize,
}

impl MessageSpan {
    /// The message's payload where it starts in `buf` (the message's
    /// first bytes): the whole payload when it is one packet; of a longer
    /// message, `payload_len` bytes from there (headers of the packets
    /// after the first included), never beyond `buf`.
    pub fn payload_in<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        let end = (HEADER_LEN + self.payload_len).min(buf.len());
        buf.get(HEADER_LEN..end).unwrap_or_default()
    }
}

/// Finds the complete logical message at the start of `buf` without copying.
///
/// - `Ok(None)`: more bytes are needed.
/// - `Err(TooLarge)`: the joined payload is already known to exceed
///   `max_payload` (checked from the headers alone, so an oversized message
///   is refused before it is buffered).
/// - `Err(BadSequence)`: a continuation packet's sequence id is not the
///   previous one plus 1 (wrapping).
pub fn scan_message(buf: &[u8], max_payload: usize) -> Result<Option<MessageSpan>> {
    let mut pos = 0usize;
    let mut span = MessageSpan {
        first_seq: 0,
        last_seq: 0,
        payload_len: 0,
        wire_len: 0,
        packets: 0,
    };
    loop {
        let Some(h) = buf.get(pos..).and_then(peek_header) else {
            return Ok(None);
        };
        if span.packets == 0 {
            span.first_seq = h.seq;
        } else {
            let expected = span.last_seq.wrapping_add(1);
            if h.seq != expected {
                return Err(ProtocolError::BadSequence {
                    expected,
                    got: h.seq,
                });
            }
        }
        span.last_seq = h.seq;
        span.packets += 1;
        span.payload_len = span.payload_len.saturating_add(h.payload_len);
        if span.payload_len > max_payload {
            return Err(ProtocolError::TooLarge {
                len: span.payload_len,
                max: max_payload,
            });
        }
        let end = pos.saturating_add(h.total_len());
        if end > buf.len() {
            return Ok(None);
        }
        pos = end;
        if !h.is_continued() {
            span.wire_len = pos;
            return Ok(Some(span));
        }
    }
}

/// Appends the joined payload of the message described by `span` (as
/// returned by [`scan_message`] on the same `buf`) to `out`. If `span` does
/// not describe `buf`, appends whatever complete packets it finds and stops.
pub fn join_payload(buf: &[u8], span: &MessageSpan, out: &mut Vec<u8>) {
    let mut rest = buf.get(..span.wire_len).unwrap_or(buf);
    for _ in 0..span.packets {
        let Some((h, payload)) = next_frame(rest) else {
            return;
        };
        out.extend_from_slice(payload);
        rest = rest.get(h.total_len()..).unwrap_or(&[]);
    }
}

/// Appends `payload` framed as packets starting with sequence id `seq`,
/// split at [`MAX_PAYLOAD_LEN`]; a payload whose length is a multiple of
/// `MAX_PAYLOAD_LEN` (including 0) ends with an empty packet so the reader
/// knows it is complete. Returns the sequence id for the next packet.
pub fn write_packet(out: &mut Vec<u8>, seq: u8, payload: &[u8]) -> u8 {
    let mut seq = seq;
    let mut rest = payload;
    loop {
        let n = rest.len().min(MAX_PAYLOAD_LEN);
        let (chunk, tail) = rest.split_at(n);
        FrameHeader {
            payload_len: n,
            seq,
        }
        .write(out);
        out.extend_from_slice(chunk);
        seq = seq.wrapping_add(1);
        rest = tail;
        if n < MAX_PAYLOAD_LEN {
            return seq;
        }
    }
}

/// Rewrites the sequence id of the framed packet at the start of `frame`
/// (the funnel renumbers packets it relays between two different
/// exchanges). No-op if `frame` is shorter than a header.
pub fn set_seq(frame: &mut [u8], seq: u8) {
    if let Some(b) = frame.get_mut(3) {
        *b = seq;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_in_takes_what_the_span_says_and_never_more_than_the_buffer() {
        let mut buf = Vec::new();
        write_packet(&mut buf, 0, b"\x03SELECT 1");
        let span = scan_message(&buf, 1 << 20).unwrap().unwrap();
        assert_eq!(span.payload_in(&buf), b"\x03SELECT 1");
        assert_eq!(span.payload_in(&buf[..7]), b"\x03SE");
        assert_eq!(span.payload_in(&buf[..2]), b"");
        assert_eq!(span.payload_in(&[]), b"");
    }

    // COM_QUIT as framed in
    // https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_basic_packets.html
    // ("01 00 00 00 01": payload length 1, sequence id 0, payload 0x01).
    const COM_QUIT_FRAME: &[u8] = &[0x01, 0x00, 0x00, 0x00, 0x01];

    #[test]
    fn header_and_frame() {
        let h = peek_header(COM_QUIT_FRAME).unwrap();
        assert_eq!(
            h,
            FrameHeader {
                payload_len: 1,
                seq: 0
            }
        );
        assert_eq!(h.total_len(), 5);
        assert!(!h.is_continued());
        assert_eq!(peek_header(&COM_QUIT_FRAME[..3]), None);
        assert_eq!(next_frame(COM_QUIT_FRAME), Some((h, &[0x01][..])));
        assert_eq!(next_frame(&COM_QUIT_FRAME[..4]), None);
        let h = peek_header(&[0xff, 0xff, 0xff, 7]).unwrap();
        assert_eq!(h.payload_len, MAX_PAYLOAD_LEN);
        assert!(h.is_continued());
    }

    #[test]
    fn write_small_packet() {
        let mut out = Vec::new();
        assert_eq!(write_packet(&mut out, 0, &[0x01]), 1);
        assert_eq!(out, COM_QUIT_FRAME);
        out.clear();
        assert_eq!(write_packet(&mut out, 255, &[]), 0);
        assert_eq!(out, [0, 0, 0, 255]);
    }

    // "Sending more than 16Mb": a payload of exactly 2^24-1 bytes is sent as
    // a full packet followed by an empty one (same page as above).
    #[test]
    fn write_split_packets() {
        let payload = vec![0xabu8; MAX_PAYLOAD_LEN];
        let mut out = Vec::new();
        assert_eq!(write_packet(&mut out, 3, &payload), 5);
        assert_eq!(out.len(), MAX_PAYLOAD_LEN + 8);
        assert_eq!(&out[..4], &[0xff, 0xff, 0xff, 3]);
        assert_eq!(&out[MAX_PAYLOAD_LEN + 4..], &[0, 0, 0, 4]);

        let span = scan_message(&out, usize::MAX).unwrap().unwrap();
        assert_eq!(
            span,
            MessageSpan {
                first_seq: 3,
                last_seq: 4,
                payload_len: MAX_PAYLOAD_LEN,
                wire_len: out.len(),
                packets: 2
            }
        );
        let mut joined = Vec::new();
        join_payload(&out, &span, &mut joined);
        assert_eq!(joined, payload);

        let payload = vec![0x11u8; MAX_PAYLOAD_LEN + 10];
        out.clear();
        assert_eq!(write_packet(&mut out, 0, &payload), 2);
        assert_eq!(
            &out[MAX_PAYLOAD_LEN + 4..MAX_PAYLOAD_LEN + 8],
            &[10, 0, 0, 1]
        );
        let span = scan_message(&out, usize::MAX).unwrap().unwrap();
        assert_eq!(span.payload_len, MAX_PAYLOAD_LEN + 10);
        assert_eq!(span.packets, 2);
        joined.clear();
        join_payload(&out, &span, &mut joined);
        assert_eq!(joined, payload);
    }

    #[test]
    fn scan_incomplete_and_trailing() {
        let mut buf = COM_QUIT_FRAME.to_vec();
        for n in 0..buf.len() {
            assert_eq!(scan_message(&buf[..n], 100), Ok(None));
        }
        buf.extend_from_slice(&[0x01, 0x00, 0x00]); // start of the next packet
        let span = scan_message(&buf, 100).unwrap().unwrap();
        assert_eq!(span.wire_len, 5);
        assert_eq!(span.packets, 1);
    }

    #[test]
    fn scan_too_large_from_header_alone() {
        // Only the header of a 1000-byte packet has arrived.
        assert_eq!(
            scan_message(&[0xe8, 0x03, 0x00, 0x00], 999),
            Err(ProtocolError::TooLarge {
                len: 1000,
                max: 999
            })
        );
        // A continued packet with max < 16 MiB.
        assert_eq!(
            scan_message(&[0xff, 0xff, 0xff, 0x00], 1024),
            Err(ProtocolError::TooLarge {
                len: MAX_PAYLOAD_LEN,
                max: 1024
            })
        );
        // Exactly max is fine.
        assert_eq!(
            scan_message(&[0x01, 0, 0, 0, 9], 1)
                .unwrap()
                .unwrap()
                .payload_len,
            1
        );
    }

    #[test]
    fn scan_bad_sequence() {
        let mut buf = vec![0xff, 0xff, 0xff, 0x05];
        buf.resize(MAX_PAYLOAD_LEN + 4, 0);
        buf.extend_from_slice(&[0x00, 0x00, 0x00, 0x07]);
        assert_eq!(
            scan_message(&buf, usize::MAX),
            Err(ProtocolError::BadSequence {
                expected: 6,
                got: 7
            })
        );
        // Wrapping 255 -> 0 is fine.
        buf[3] = 0xff;
        let n = buf.len();
        buf[n - 1] = 0x00;
        let span = scan_message(&buf, usize::MAX).unwrap().unwrap();
        assert_eq!((span.first_seq, span.last_seq), (255, 0));
    }

    #[test]
    fn set_seq_in_place() {
        let mut f = COM_QUIT_FRAME.to_vec();
        set_seq(&mut f, 9);
        assert_eq!(f, [1, 0, 0, 9, 1]);
        let mut short = [1u8, 2, 3];
        set_seq(&mut short, 9);
        assert_eq!(short, [1, 2, 3]);
    }

    #[test]
    fn join_with_mismatched_span_does_not_panic() {
        let span = MessageSpan {
            first_seq: 0,
            last_seq: 0,
            payload_len: 10,
            wire_len: 1000,
            packets: 5,
        };
        let mut out = Vec::new();
        join_payload(COM_QUIT_FRAME, &span, &mut out);
        assert_eq!(out, [1]);
    }

    #[test]
    fn upload_framer_relays_partial_packets_and_finds_the_end() {
        let mut wire = Vec::new();
        write_packet(&mut wire, 2, b"line one\n");
        write_packet(&mut wire, 3, b"two\n");
        write_packet(&mut wire, 4, b"");
        wire.extend_from_slice(b"\x01\x00\x00\x00\x0e"); // the next command
        let end = wire.len() - 5;
        // Fed a byte at a time, like a slow client.
        let mut f = UploadFramer::default();
        let mut relayed = 0;
        let mut done = false;
        let original = wire.clone();
        for i in 1..=wire.len() {
            let (n, finished) = f.advance(&mut wire[relayed..i], 0);
            relayed += n;
            if finished {
                done = true;
                break;
            }
        }
        assert!(done);
        assert_eq!(relayed, end);
        assert_eq!(wire, original);
        // All at once, renumbered by 2.
        let mut f = UploadFramer::default();
        assert_eq!(f.advance(&mut wire, 2), (end, true));
        let seqs: Vec<u8> = [0, 13, 21].iter().map(|&at| wire[at + 3]).collect();
        assert_eq!(seqs, [4, 5, 6]);
        assert_eq!(wire[end..], original[end..]);
    }

    #[test]
    fn upload_framer_does_not_end_at_a_continuation_terminator() {
        let mut f = UploadFramer::default();
        let mut head = vec![0xff, 0xff, 0xff, 2];
        head.extend(std::iter::repeat_n(b'x', MAX_PAYLOAD_LEN));
        assert_eq!(f.advance(&mut head, 0), (head.len(), false));
        // The empty packet closing the 16 MiB one, then the real end.
        assert_eq!(f.advance(&mut [0, 0, 0, 3, 0, 0, 0, 4], 0), (8, true));
    }
}
