//! `host`: the machine that recorded a trace. Its kernel release read exactly
//! (a stable point release like 5.15.61 gets the tabled backports; a
//! distribution kernel maps to its mainline release with a note; see
//! `super::kernel_release`), the recorded vendor (`kvm_module`, CPU vendor as a
//! fallback), the recorded valid quirk mask and advertised MSR list, and the
//! vendor table's facts for that vendor and release (`crate::vendor`).

use kvmtrace_format::TraceHeader;

use crate::policy::{Policy, ValidQuirks, Vendor};

pub fn from_header(header: &TraceHeader) -> Policy {
    let k = super::kernel_release(&header.host.kernel_release);
    let (vendor, why) = Vendor::of_header_explained(header);
    let mut p = super::policy(k.line, k.point, vendor);
    p.name = "host".to_string();
    p.notes = k.notes;
    p.notes.extend(why);
    if header.host.valid_quirks != 0 {
        p.switches.valid_quirks = ValidQuirks::Mask(header.host.valid_quirks);
    }
    if !header.host.msr_index_list.is_empty() {
        let mut l = header.host.msr_index_list.clone();
        l.sort_unstable();
        l.dedup();
        p.advertised_msrs = Some(l);
    }
    p
}
