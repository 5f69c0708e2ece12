//! The client side of an attach stream (run, start --attach, exec): forwards stdin and
//! terminal size, prints stdout and stderr as they come, and returns the exit status.

use std::io::IsTerminal;
use std::os::fd::AsFd;

use anyhow::{bail, Context, Result};
use berth_client::AttachStream;
use berth_model::stream::{self, encode_frame, FrameKind};
use berth_model::ExitStatus;
use nix::sys::termios::{self, SetArg, Termios};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// Puts the local terminal in raw mode while a remote terminal is attached.
struct RawTerminal {
    saved: Termios,
}

impl RawTerminal {
    fn enter() -> Option<RawTerminal> {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return None;
        }
        let saved = termios::tcgetattr(stdin.as_fd()).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).ok()?;
        Some(RawTerminal { saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, &self.saved);
    }
}

fn terminal_size() -> Option<(u16, u16)> {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ fills a winsize we own.
    let rc = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) };
    (rc == 0 && size.ws_row > 0).then_some((size.ws_row, size.ws_col))
}

/// Runs the session to its end: `Some(status)` when the process exited, `None` when the
/// user pressed `detach_key`. `Err` if the stream ended without an exit status.
pub async fn run_session(
    stream: AttachStream,
    forward_stdin: bool,
    tty: bool,
    detach_key: Option<u8>,
) -> Result<Option<ExitStatus>> {
    let (mut reader, mut writer) = tokio::io::split(stream);
    let (frames, mut outgoing) = mpsc::channel::<Vec<u8>>(64);
    let _raw = if tty && forward_stdin {
        RawTerminal::enter()
    } else {
        None
    };

    let writer_task = tokio::spawn(async move {
        while let Some(frame) = outgoing.recv().await {
            if writer.write_all(&frame).await.is_err() {
                break;
            }
        }
    });
    if tty {
        if let Some((rows, cols)) = terminal_size() {
            let _ = frames.send(stream::Frame::resize(rows, cols).encode()).await;
        }
        let resize_frames = frames.clone();
        tokio::spawn(async move {
            let Ok(mut winch) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change()) else {
                return;
            };
            while winch.recv().await.is_some() {
                if let Some((rows, cols)) = terminal_size() {
                    if resize_frames
                        .send(stream::Frame::resize(rows, cols).encode())
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        });
    }
    let (detached_tx, mut detached) = mpsc::channel::<()>(1);
    if forward_stdin {
        let stdin_frames = frames.clone();
        tokio::spawn(async move {
            let mut stdin = tokio::io::stdin();
            let mut buffer = vec![0u8; 16 * 1024];
            loop {
                match stdin.read(&mut buffer).await {
                    Ok(0) | Err(_) => {
                        let _ = stdin_frames.send(encode_frame(FrameKind::StdinClose, &[])).await;
                        return;
                    }
                    Ok(n) => {
                        let input = &buffer[..n];
                        if let Some(at) = detach_key.and_then(|key| input.iter().position(|b| *b == key)) {
                            if at > 0 {
                                let _ = stdin_frames.send(encode_frame(FrameKind::Stdin, &input[..at])).await;
                            }
                            let _ = detached_tx.send(()).await;
                            return;
                        }
                        if stdin_frames.send(encode_frame(FrameKind::Stdin, input)).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
    drop(frames);

    let mut stdout = tokio::io::stdout();
    let mut stderr = tokio::io::stderr();
    let result = loop {
        let mut header = [0u8; stream::HEADER_LEN];
        tokio::select! {
            read = reader.read_exact(&mut header) => {
                if read.is_err() {
                    break None;
                }
            }
            // Only a real detach: a closed channel means stdin ended, which is not one.
            Some(()) = detached.recv() => {
                writer_task.abort();
                return Ok(None);
            }
        }
        let (kind, len) = stream::parse_header(&header).context("reading the attach stream")?;
        let mut payload = vec![0u8; len];
        reader
            .read_exact(&mut payload)
            .await
            .context("reading the attach stream")?;
        match kind {
            FrameKind::Stdout => {
                stdout.write_all(&payload).await?;
                stdout.flush().await?;
            }
            FrameKind::Stderr => {
                stderr.write_all(&payload).await?;
                stderr.flush().await?;
            }
            FrameKind::Exit => {
                break Some(serde_json::from_slice::<ExitStatus>(&payload).context("bad exit status")?);
            }
            FrameKind::Error => bail!("{}", String::from_utf8_lossy(&payload)),
            _ => {}
        }
    };
    writer_task.abort();
    match result {
        Some(status) => Ok(Some(status)),
        None => bail!("the attach stream ended without an exit status"),
    }
}

/// Writes a logs response (frames) to stdout and stderr.
pub async fn print_frames(mut body: berth_client::BodyStream) -> Result<()> {
    let mut stdout = tokio::io::stdout();
    let mut stderr = tokio::io::stderr();
    let mut buffer: Vec<u8> = Vec::new();
    while let Some(chunk) = body.next_chunk().await? {
        buffer.extend_from_slice(&chunk);
        // Consecutive payloads of one stream are written at once (a chunk holds many frames).
        let mut consumed = 0;
        let mut run: (Option<FrameKind>, Vec<u8>) = (None, Vec::new());
        while buffer.len() - consumed >= stream::HEADER_LEN {
            let mut header = [0u8; stream::HEADER_LEN];
            header.copy_from_slice(&buffer[consumed..consumed + stream::HEADER_LEN]);
            let (kind, len) = stream::parse_header(&header)?;
            if buffer.len() - consumed < stream::HEADER_LEN + len {
                break;
            }
            let payload = &buffer[consumed + stream::HEADER_LEN..consumed + stream::HEADER_LEN + len];
            let is_stderr = kind == FrameKind::Stderr;
            if run.0.is_some_and(|k| (k == FrameKind::Stderr) != is_stderr) {
                write_run(&mut stdout, &mut stderr, &mut run).await?;
            }
            run.0 = Some(kind);
            run.1.extend_from_slice(payload);
            consumed += stream::HEADER_LEN + len;
        }
        write_run(&mut stdout, &mut stderr, &mut run).await?;
        buffer.drain(..consumed);
        stdout.flush().await?;
    }
    Ok(())
}

async fn write_run(
    stdout: &mut tokio::io::Stdout,
    stderr: &mut tokio::io::Stderr,
    run: &mut (Option<FrameKind>, Vec<u8>),
) -> Result<()> {
    match run.0.take() {
        Some(FrameKind::Stderr) => stderr.write_all(&run.1).await?,
        Some(_) => stdout.write_all(&run.1).await?,
        None => {}
    }
    run.1.clear();
    Ok(())
}
