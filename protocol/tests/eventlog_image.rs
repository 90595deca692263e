//! Measuring device images from disk: the sample image in `examples/image`, and hostile
//! images whose manifests try to read outside their directory.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use protocol::eventlog::{EventLog, EventType};
use protocol::image::{self, ImageError, SEPARATOR_DATA};
use protocol::tpm::HashAlg;

fn sample() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/image")
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("tresor-image-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn manifest(file: &str) -> String {
    format!(
        "format = 1\nname = \"t\"\nversion = \"1\"\n\n[[component]]\nname = \"os\"\nkind = \"os\"\nversion = \"1\"\nfile = {file:?}\npcr = 4\n"
    )
}

#[test]
fn sample_image_measures_every_component_then_separators() {
    let banks = [HashAlg::Sha256, HashAlg::Sha1];
    let ms = image::measure(&sample(), &banks).unwrap();
    let expected = [
        (0, EventType::EV_POST_CODE, "bootloader.bin"),
        (2, EventType::EV_NONHOST_CODE, "modem-firmware.bin"),
        (4, EventType::EV_IPL, "os.img"),
        (8, EventType::EV_IPL, "tre-agent.bin"),
        (9, EventType::EV_EVENT_TAG, "config.toml"),
    ];
    assert_eq!(ms.len(), expected.len() * 2);
    for (m, (pcr, event_type, file)) in ms.iter().zip(expected) {
        assert_eq!((m.pcr, m.event_type), (pcr, event_type));
        let contents = std::fs::read(sample().join(file)).unwrap();
        for alg in banks {
            assert_eq!(m.digest(alg).unwrap(), alg.digest(&contents), "{file} {alg}");
        }
        assert!(image::component_of(m.event_type, &m.data).is_some(), "{file}");
    }
    assert_eq!(image::component_of(ms[3].event_type, &ms[3].data), Some(("tre-agent", "1.4.2")));
    for (m, pcr) in ms[5..].iter().zip([0, 2, 4, 8, 9]) {
        assert_eq!(
            (m.pcr, m.event_type, m.data.as_slice()),
            (pcr, EventType::EV_SEPARATOR, SEPARATOR_DATA.as_slice())
        );
        assert_eq!(m.digest(HashAlg::Sha256).unwrap(), HashAlg::Sha256.digest(&[0; 4]));
    }
}

#[test]
fn expected_pcrs_are_the_extends_of_a_fresh_tpm() {
    let banks = [HashAlg::Sha256];
    let ms = image::measure(&sample(), &banks).unwrap();
    let pcrs = image::expected_pcrs(&banks, &ms).unwrap();
    // PCR 4 by hand: H(H(0 ‖ H(os.img)) ‖ H(00000000)).
    let sha = HashAlg::Sha256;
    let os = sha.digest(&std::fs::read(sample().join("os.img")).unwrap());
    let after_os = sha.digest_parts(&[&[0; 32], &os]);
    let pcr4 = sha.digest_parts(&[&after_os, &sha.digest(&[0; 4])]);
    assert_eq!(pcrs.value(sha, 4).unwrap(), pcr4);
    assert_eq!(pcrs.value(sha, 1).unwrap(), [0; 32]);
    // Writing the log and replaying it gives the same.
    let log =
        EventLog::parse(&EventLog::from_measurements(&banks, &ms).unwrap().to_bytes()).unwrap();
    assert_eq!(log.replay().unwrap(), pcrs);
}

#[test]
fn banks_must_be_given_once() {
    assert!(matches!(image::measure(&sample(), &[]), Err(ImageError::NoBanks)));
    assert!(matches!(
        image::measure(&sample(), &[HashAlg::Sha256, HashAlg::Sha256]),
        Err(ImageError::DuplicateBank(HashAlg::Sha256))
    ));
}

#[test]
fn a_symlink_out_of_the_image_is_refused() {
    let dir = TempDir::new("symlink");
    std::os::unix::fs::symlink("/etc/hostname", dir.0.join("os.img")).unwrap();
    std::fs::write(dir.0.join("manifest.toml"), manifest("os.img")).unwrap();
    assert!(matches!(
        image::measure(&dir.0, &[HashAlg::Sha256]),
        Err(ImageError::OutsideImage { .. })
    ));

    // A symlink that stays inside is fine.
    std::fs::write(dir.0.join("real.img"), b"kernel").unwrap();
    std::os::unix::fs::symlink("real.img", dir.0.join("inside.img")).unwrap();
    std::fs::write(dir.0.join("manifest.toml"), manifest("inside.img")).unwrap();
    let ms = image::measure(&dir.0, &[HashAlg::Sha256]).unwrap();
    assert_eq!(ms[0].digest(HashAlg::Sha256).unwrap(), HashAlg::Sha256.digest(b"kernel"));
}

#[test]
fn missing_files_directories_and_manifests_are_clear_errors() {
    let dir = TempDir::new("missing");
    assert!(
        matches!(image::measure(&dir.0, &[HashAlg::Sha256]), Err(ImageError::Io { path, .. }) if path.ends_with("manifest.toml"))
    );
    std::fs::write(dir.0.join("manifest.toml"), manifest("absent.img")).unwrap();
    assert!(
        matches!(image::measure(&dir.0, &[HashAlg::Sha256]), Err(ImageError::Io { path, .. }) if path.ends_with("absent.img"))
    );
    std::fs::create_dir(dir.0.join("sub")).unwrap();
    std::fs::write(dir.0.join("manifest.toml"), manifest("sub")).unwrap();
    assert!(matches!(image::measure(&dir.0, &[HashAlg::Sha256]), Err(ImageError::NotAFile { .. })));
    std::fs::write(dir.0.join("manifest.toml"), vec![b'#'; 70 * 1024]).unwrap();
    assert!(matches!(
        image::measure(&dir.0, &[HashAlg::Sha256]),
        Err(ImageError::ManifestTooLarge { .. })
    ));
}
