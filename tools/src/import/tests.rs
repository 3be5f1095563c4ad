//! The `import` command: files, flags, the header.

/// The capture crate's tracefs text fixture.
const TRACE: &str = include_str!("../../../capture/testdata/ftrace_nop.txt");

#[test]
fn command_round_trip_import_export() {
    let dir = std::env::temp_dir().join(format!("kvmtrace-import-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = dir.join("t.txt");
    std::fs::write(&text, TRACE).unwrap();
    let kvt = dir.join("t.kvt");
    let args = super::ImportArgs {
        format: "ftrace".into(),
        input: text.clone(),
        output: kvt.clone(),
        kernel: Some("6.1.0".into()),
        vendor: Some("intel".into()),
        lenient: false,
        json: true,
        pid: None,
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    assert_eq!(super::run(&args, &mut out, &mut err).unwrap(), 0);
    let err_text = String::from_utf8_lossy(&err).into_owned();
    assert!(
        !err_text.contains("assuming"),
        "no 'assuming this machine' note with --kernel/--vendor: {err_text}"
    );
    // The two unnamed threads' vCPU numbers are a guess, said once.
    assert!(err_text.contains("guess"), "{err_text}");
    let mut reader = kvmtrace_format::TraceReader::open(&kvt).unwrap();
    assert_eq!(
        reader.header().capture.mode,
        kvmtrace_format::CaptureMode::Import
    );
    assert_eq!(reader.header().host.kernel_release, "6.1.0");
    assert_eq!(reader.header().host.kvm_module, "kvm_intel");
    // 4 events and each thread's VcpuThread record.
    assert_eq!(reader.records().count(), 6);
    for format in ["chrome", "perfetto"] {
        let args = crate::export::ExportArgs {
            trace: kvt.clone(),
            format: format.into(),
            output: dir.join(format!("t.{format}")),
            policy: Some("host".into()),
            range: None,
        };
        assert_eq!(crate::export::run(&args, &mut out, &mut err).unwrap(), 0);
    }
    // A failed import leaves no trace file behind.
    std::fs::write(
        &text,
        "  p-1 [000] ..... 1.0: kvm_msr: msr_read 10 = 0x1\n  p-1 [000] ..... 1.1: kvm_msr: bad\n",
    )
    .unwrap();
    let bad = dir.join("bad.kvt");
    let args = super::ImportArgs {
        output: bad.clone(),
        ..args
    };
    let e = super::run(&args, &mut out, &mut err)
        .unwrap_err()
        .to_string();
    assert!(e.contains("t.txt:2"), "{e}");
    assert!(!bad.exists() && !kvmtrace_format::incomplete_path(&bad).exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn host_flags() {
    assert!(super::import_host(Some("banana"), Some("intel")).is_err());
    assert!(super::import_host(Some("6.1.0"), Some("arm")).is_err());
    let (h, note) = super::import_host(Some("5.15.0-91-generic"), Some("amd")).unwrap();
    assert_eq!((h.kvm_module.as_str(), note), ("kvm_amd", None));
    let (_, note) = super::import_host(None, None).unwrap();
    assert!(
        note.unwrap()
            .contains("assuming the text came from this machine")
    );
}
