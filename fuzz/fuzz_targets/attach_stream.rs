//! The attach stream: any bytes a client or supervisor sends are read frame by frame without
//! a panic or an allocation beyond the frame limit, and frames that parse re-encode to the
//! same bytes.
#![no_main]

use berth_model::stream::{Frame, MAX_PAYLOAD};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut reader = data;
    let mut consumed = 0usize;
    while let Ok(Some(frame)) = Frame::read_from(&mut reader) {
        assert!(frame.payload.len() <= MAX_PAYLOAD);
        let encoded = frame.encode();
        assert_eq!(&data[consumed..consumed + encoded.len()], &encoded[..]);
        consumed += encoded.len();
        let _ = frame.as_resize();
        let _ = frame.as_exit();
    }
});
