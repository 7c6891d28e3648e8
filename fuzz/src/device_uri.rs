//! Fuzz target `device_uri`: the bytes as a `--device` URI (`vfio:`, `uio:`, `sim:` with the
//! simulator's options).

use quantis_driver::hw::sim::SimSpec;
use quantis_driver::hw::DeviceUri;

/// One fuzz input.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(uri) = text.parse::<DeviceUri>() {
        // What parses prints back to the same device.
        let again: DeviceUri = uri.to_string().parse().expect("a printed URI parses");
        assert_eq!(again, uri, "{text:?} printed as {uri}");
        if let DeviceUri::Sim(spec) = &uri {
            let _ = spec.parse::<SimSpec>();
        }
    }
    // The simulator's options directly, as `sim:` hands them over.
    let _ = text.parse::<SimSpec>();
}
