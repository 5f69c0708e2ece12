//! The attach stream: after `start?attach=1` or `exec` upgrades the HTTP connection, the
//! client and the instance's supervisor exchange frames end to end (the daemon only copies
//! bytes). A frame is a 5-byte header — kind (u8) and payload length (u32, big endian) —
//! followed by the payload.

use std::io::{self, Read, Write};

use crate::instance::ExitStatus;

pub const HEADER_LEN: usize = 5;
/// Larger payloads are split; keeps buffers small on both ends.
pub const MAX_PAYLOAD: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// client → instance: bytes for stdin.
    Stdin = 0,
    /// instance → client
    Stdout = 1,
    /// instance → client
    Stderr = 2,
    /// instance → client: JSON `ExitStatus`; the last frame.
    Exit = 3,
    /// client → instance: terminal size, rows then cols as u16 big endian.
    Resize = 4,
    /// client → instance: stdin reached end of file.
    StdinClose = 5,
    /// instance → client: the process could not start; UTF-8 message; the last frame.
    Error = 6,
    /// instance → client: the session's token, as the request carried it; the first frame
    /// of a VM exec session whose request had one. Frames before it belong to a session
    /// whose host left (see `berth_guest`).
    Session = 7,
}

impl FrameKind {
    pub fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            0 => FrameKind::Stdin,
            1 => FrameKind::Stdout,
            2 => FrameKind::Stderr,
            3 => FrameKind::Exit,
            4 => FrameKind::Resize,
            5 => FrameKind::StdinClose,
            6 => FrameKind::Error,
            7 => FrameKind::Session,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: FrameKind,
    pub payload: Vec<u8>,
}

impl Frame {
    pub fn new(kind: FrameKind, payload: impl Into<Vec<u8>>) -> Self {
        Frame {
            kind,
            payload: payload.into(),
        }
    }

    pub fn exit(status: &ExitStatus) -> Self {
        // Serialising a plain struct of integers and bools cannot fail.
        let payload = serde_json::to_vec(status).unwrap_or_default();
        Frame::new(FrameKind::Exit, payload)
    }

    pub fn resize(rows: u16, cols: u16) -> Self {
        let mut payload = Vec::with_capacity(4);
        payload.extend_from_slice(&rows.to_be_bytes());
        payload.extend_from_slice(&cols.to_be_bytes());
        Frame::new(FrameKind::Resize, payload)
    }

    /// (rows, cols) of a Resize frame.
    pub fn as_resize(&self) -> Option<(u16, u16)> {
        if self.kind != FrameKind::Resize || self.payload.len() != 4 {
            return None;
        }
        let rows = u16::from_be_bytes([self.payload[0], self.payload[1]]);
        let cols = u16::from_be_bytes([self.payload[2], self.payload[3]]);
        Some((rows, cols))
    }

    pub fn as_exit(&self) -> Option<ExitStatus> {
        if self.kind != FrameKind::Exit {
            return None;
        }
        serde_json::from_slice(&self.payload).ok()
    }

    /// Header and payload as one buffer, ready to write.
    pub fn encode(&self) -> Vec<u8> {
        encode_frame(self.kind, &self.payload)
    }

    pub fn write_to(&self, writer: &mut impl Write) -> io::Result<()> {
        writer.write_all(&self.encode())
    }

    /// Reads one frame; `Ok(None)` at a clean end of stream.
    pub fn read_from(reader: &mut impl Read) -> io::Result<Option<Frame>> {
        let mut header = [0u8; HEADER_LEN];
        match reader.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let (kind, len) = parse_header(&header)?;
        let mut payload = vec![0u8; len];
        reader.read_exact(&mut payload)?;
        Ok(Some(Frame { kind, payload }))
    }
}

pub fn encode_frame(kind: FrameKind, payload: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(HEADER_LEN + payload.len());
    buf.push(kind as u8);
    buf.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    buf.extend_from_slice(payload);
    buf
}

pub fn parse_header(header: &[u8; HEADER_LEN]) -> io::Result<(FrameKind, usize)> {
    let kind = FrameKind::from_byte(header[0]).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unknown stream frame kind {}", header[0]),
        )
    })?;
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if len > MAX_PAYLOAD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("stream frame of {len} bytes exceeds {MAX_PAYLOAD}"),
        ));
    }
    Ok((kind, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let mut buf = Vec::new();
        Frame::new(FrameKind::Stdout, b"hello".to_vec())
            .write_to(&mut buf)
            .unwrap();
        Frame::resize(24, 80).write_to(&mut buf).unwrap();
        Frame::exit(&ExitStatus::from_code(3)).write_to(&mut buf).unwrap();
        let mut reader = &buf[..];
        let first = Frame::read_from(&mut reader).unwrap().unwrap();
        assert_eq!(first.payload, b"hello");
        assert_eq!(
            Frame::read_from(&mut reader).unwrap().unwrap().as_resize(),
            Some((24, 80))
        );
        let exit = Frame::read_from(&mut reader).unwrap().unwrap();
        assert_eq!(exit.as_exit().unwrap().code, 3);
        assert!(Frame::read_from(&mut reader).unwrap().is_none());
    }

    #[test]
    fn rejects_garbage() {
        let mut reader = &[9u8, 0, 0, 0, 1, 0][..];
        assert!(Frame::read_from(&mut reader).is_err());
        let mut reader = &[1u8, 0xff, 0xff, 0xff, 0xff][..];
        assert!(Frame::read_from(&mut reader).is_err());
    }
}
