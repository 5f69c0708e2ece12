//! The host side of a VM exec session: `berth vm-exec SOCKET REQUEST` connects to the VM's
//! exec port, sends the request and turns the guest's frames back into this process's
//! stdout, stderr and exit status — so a supervisor can run it like any process.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use berth_model::stream::{encode_frame, Frame, FrameKind};
use berth_model::ExitStatus;

use crate::agent::GuestExec;

/// Connects to the exec port; the port serves one session at a time, so wait for it.
pub fn connect(socket: &Path, timeout: Duration) -> std::io::Result<UnixStream> {
    let deadline = Instant::now() + timeout;
    loop {
        match UnixStream::connect(socket) {
            Ok(stream) => return Ok(stream),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Sends one request and waits for its Exit frame.
pub fn request(socket: &Path, exec: &GuestExec, forward_stdin: bool) -> std::io::Result<ExitStatus> {
    let stream = connect(socket, Duration::from_secs(10))?;
    request_on(
        stream,
        exec,
        forward_stdin,
        &mut std::io::stdout(),
        &mut std::io::stderr(),
    )
}

/// Sends one request that must be answered within `timeout` (a signal for the main
/// command): the port may be busy with an exec session, or the guest may not answer.
pub fn request_within(socket: &Path, exec: &GuestExec, timeout: Duration) -> std::io::Result<ExitStatus> {
    let stream = connect(socket, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    request_on(stream, exec, false, &mut std::io::stdout(), &mut std::io::stderr())
}

/// Sends the request on `stream` and copies the session's output to `stdout` and `stderr`.
fn request_on(
    mut stream: UnixStream,
    exec: &GuestExec,
    forward_stdin: bool,
    stdout: &mut impl Write,
    stderr: &mut impl Write,
) -> std::io::Result<ExitStatus> {
    let mut line = serde_json::to_vec(exec).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    if forward_stdin {
        let mut writer = stream.try_clone()?;
        std::thread::spawn(move || {
            let mut stdin = std::io::stdin();
            let mut buffer = [0u8; 16 * 1024];
            loop {
                match stdin.read(&mut buffer) {
                    Ok(0) | Err(_) => {
                        let _ = writer.write_all(&encode_frame(FrameKind::StdinClose, &[]));
                        return;
                    }
                    Ok(n) => {
                        if writer.write_all(&encode_frame(FrameKind::Stdin, &buffer[..n])).is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
    // With a token, this session's frames start at the `Session` frame carrying it; what
    // comes before belongs to a session whose host left.
    let mut ours = exec.session.is_none();
    loop {
        match Frame::read_from(&mut stream)? {
            None => {
                return Err(std::io::Error::other(
                    "the guest ended the session without an exit status",
                ))
            }
            Some(frame) if !ours => match frame.kind {
                FrameKind::Session => ours = exec.session.as_deref().map(str::as_bytes) == Some(&frame.payload[..]),
                // The agent could not read the request, so it could not acknowledge it.
                FrameKind::Error => {
                    return Err(std::io::Error::other(
                        String::from_utf8_lossy(&frame.payload).into_owned(),
                    ));
                }
                _ => {}
            },
            Some(frame) => match frame.kind {
                FrameKind::Stdout => {
                    stdout.write_all(&frame.payload)?;
                    stdout.flush()?;
                }
                FrameKind::Stderr => {
                    stderr.write_all(&frame.payload)?;
                    stderr.flush()?;
                }
                FrameKind::Exit => {
                    return frame
                        .as_exit()
                        .ok_or_else(|| std::io::Error::other("bad exit status from the guest"));
                }
                FrameKind::Error => {
                    return Err(std::io::Error::other(
                        String::from_utf8_lossy(&frame.payload).into_owned(),
                    ));
                }
                _ => {}
            },
        }
    }
}

/// `berth vm-exec`: returns the process exit code.
pub fn run(socket: &Path, request_json: &str) -> i32 {
    let exec: GuestExec = match serde_json::from_str(request_json) {
        Ok(exec) => exec,
        Err(e) => {
            eprintln!("berth: bad exec request: {e}");
            return 125;
        }
    };
    match request(socket, &exec, true) {
        Ok(status) => status.code,
        Err(e) => {
            eprintln!("berth: exec in the VM: {e}");
            126
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_before_the_sessions_token_are_dropped() {
        let (host, mut guest) = UnixStream::pair().unwrap();
        let exec = GuestExec {
            args: vec!["true".into()],
            session: Some("b0a7".into()),
            ..GuestExec::default()
        };
        // What a session whose host left still wrote, another token, then this session.
        for frame in [
            Frame::new(FrameKind::Stdout, "abandoned\n"),
            Frame::exit(&ExitStatus::from_code(0)),
            Frame::new(FrameKind::Session, "other"),
            Frame::new(FrameKind::Stderr, "not ours\n"),
            Frame::new(FrameKind::Session, "b0a7"),
            Frame::new(FrameKind::Stdout, "next\n"),
            Frame::exit(&ExitStatus::from_code(3)),
        ] {
            frame.write_to(&mut guest).unwrap();
        }
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let status = request_on(host, &exec, false, &mut stdout, &mut stderr).unwrap();
        assert_eq!((status.code, &stdout[..], &stderr[..]), (3, &b"next\n"[..], &b""[..]));
    }

    #[test]
    fn without_a_token_every_frame_is_the_sessions() {
        let (host, mut guest) = UnixStream::pair().unwrap();
        let exec = GuestExec {
            args: vec!["true".into()],
            ..GuestExec::default()
        };
        Frame::new(FrameKind::Stdout, "out\n").write_to(&mut guest).unwrap();
        Frame::exit(&ExitStatus::from_code(0)).write_to(&mut guest).unwrap();
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let status = request_on(host, &exec, false, &mut stdout, &mut stderr).unwrap();
        assert_eq!((status.code, &stdout[..]), (0, &b"out\n"[..]));
    }

    #[test]
    fn an_error_before_the_token_is_the_sessions_own() {
        let (host, mut guest) = UnixStream::pair().unwrap();
        let exec = GuestExec {
            session: Some("b0a7".into()),
            ..GuestExec::default()
        };
        Frame::new(FrameKind::Error, "bad exec request: expected value")
            .write_to(&mut guest)
            .unwrap();
        let error = request_on(host, &exec, false, &mut Vec::new(), &mut Vec::new()).unwrap_err();
        assert!(error.to_string().contains("bad exec request"), "{error}");
    }
}
