//! Fuzzes the check-in decoder: any bytes a device sends to /mdm/checkin.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = orchard_protocol::checkin::decode_checkin(data);
});
