//! Fuzzes the command-report decoder and every result parser: any bytes a device sends to /mdm/command.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(report) = orchard_protocol::report::decode_report(data) {
        for request_type in [
            "DeviceInformation",
            "SecurityInfo",
            "InstalledApplicationList",
            "ProfileList",
            "CertificateList",
            "DeviceLocation",
            "ActivationLockBypassCode",
            "UserList",
            "AvailableOSUpdates",
            "ScheduleOSUpdate",
            "OSUpdateStatus",
            "ManagedApplicationList",
        ] {
            let _ = orchard_protocol::results::parse_result(request_type, &report);
        }
    }
});
