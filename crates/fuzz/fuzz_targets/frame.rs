//! Bytes from a peer, decoded as a chat frame and checked into the core's
//! types: nothing may panic, whatever arrives.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    peerchat_peerd::fuzzing::frame(data);
});
