//! Bytes on the control socket, decoded as each kind of control request and
//! validated: nothing may panic, whatever a client sends.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    peerchat_peerd::fuzzing::control(data);
});
