//! `host`: the machine that recorded a trace. The preset nearest at or below the
//! recorded kernel release, the recorded vendor (`kvm_module`, CPU vendor as a
//! fallback), the recorded valid quirk mask and advertised MSR list, and the
//! host peculiarities of `docs/host-notes.md` (for `kvm_pvm`: vendor `pvm`, see
//! `crate::model`).

use kvmtrace_format::TraceHeader;

use crate::policy::{Policy, ValidQuirks, Vendor};

pub fn from_header(header: &TraceHeader) -> Policy {
    let base = super::nearest(&header.host.kernel_release);
    let mut p = (base.build)(Vendor::of_header(header));
    p.name = "host".to_string();
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
