//! Kernel modules as the initramfs carries them: without what the guest kernel would spend
//! boot time on and the agent has no use for.
//!
//! - The appended signature. Debian's kernel checks it at every `finit_module` (SHA-256 of
//!   the module and an RSA verification, emulated instruction by instruction under TCG), yet
//!   does not require it: `CONFIG_MODULE_SIG_FORCE` is off and a PVH-booted guest has no
//!   Secure Boot lockdown. An unsigned module loads and taints the kernel (`E` in
//!   `/proc/sys/kernel/tainted`); the modules are the same files from the same package.
//! - The module's BTF (`.BTF`), which the kernel parses at load for BPF tracing of the
//!   module. The section is kept and only its name cleared, so nothing in the file moves.
//!
//! Together 65 ms of a VM's boot under TCG (bench/vm-boot.sh). A file that is not what this
//! expects (not 64-bit little-endian ELF, a section table out of bounds) is passed through
//! unchanged: it still loads, only slower.

use std::borrow::Cow;

use crate::le_bytes;

/// The trailer `scripts/sign-file` appends after the signature.
const SIGNATURE_MAGIC: &[u8] = b"~Module signature appended~\n";
/// `struct module_signature`, which sits between the signature and the magic; its last four
/// bytes are the signature's length, big-endian.
const SIGNATURE_INFO_LEN: usize = 12;

/// `module` ready for the initramfs: no appended signature, no BTF section name.
pub fn slim(module: &[u8]) -> Cow<'_, [u8]> {
    let unsigned = without_signature(module);
    match btf_name_offset(unsigned) {
        Some(at) => {
            let mut slimmed = unsigned.to_vec();
            // sh_name 0 is the string table's leading empty string.
            slimmed[at..at + 4].copy_from_slice(&0u32.to_le_bytes());
            Cow::Owned(slimmed)
        }
        None => Cow::Borrowed(unsigned),
    }
}

/// The module without its appended signature (the module itself when it has none).
fn without_signature(module: &[u8]) -> &[u8] {
    let Some(rest) = module.strip_suffix(SIGNATURE_MAGIC) else {
        return module;
    };
    let Some(info_at) = rest.len().checked_sub(SIGNATURE_INFO_LEN) else {
        return module;
    };
    let info = &rest[info_at..];
    let signature_len = u32::from_be_bytes([info[8], info[9], info[10], info[11]]) as usize;
    // The signer and key id lengths (bytes 3 and 4) are 0 for PKCS#7, the only kind the
    // kernel accepts, so the signature is all that precedes the info.
    match info_at.checked_sub(signature_len) {
        Some(end) if info[3] == 0 && info[4] == 0 => &module[..end],
        _ => module,
    }
}

/// Where in `elf` the section header of `.BTF` keeps its name offset (`sh_name`).
fn btf_name_offset(elf: &[u8]) -> Option<usize> {
    // 64-bit, little-endian: the only kind an x86-64 kernel loads.
    if !elf.starts_with(b"\x7fELF\x02\x01") {
        return None;
    }
    let u16_at = |at: usize| le_bytes::u16_at(elf, at);
    let u32_at = |at: usize| le_bytes::u32_at(elf, at);
    let u64_at = |at: usize| le_bytes::u64_at(elf, at);
    let table = usize::try_from(u64_at(0x28)?).ok()?;
    let entry_len = usize::from(u16_at(0x3a)?);
    let count = usize::from(u16_at(0x3c)?);
    let names_index = usize::from(u16_at(0x3e)?);
    if entry_len < 64 || names_index >= count {
        return None;
    }
    let header = |index: usize| table.checked_add(index.checked_mul(entry_len)?);
    let names_header = header(names_index)?;
    let names_at = usize::try_from(u64_at(names_header.checked_add(0x18)?)?).ok()?;
    let names_len = usize::try_from(u64_at(names_header.checked_add(0x20)?)?).ok()?;
    let names = elf.get(names_at..names_at.checked_add(names_len)?)?;
    (0..count).find_map(|index| {
        let at = header(index)?;
        let name_at = usize::try_from(u32_at(at)?).ok()?;
        let name = names.get(name_at..)?;
        name.starts_with(b".BTF\0").then_some(at)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 file: a null section, `.text`, `.BTF` and the section name table.
    fn elf_with_btf() -> Vec<u8> {
        let names = b"\0.text\0.BTF\0.shstrtab\0";
        let mut elf = vec![0u8; 64];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        let names_at = elf.len();
        elf.extend_from_slice(names);
        while !elf.len().is_multiple_of(8) {
            elf.push(0);
        }
        let table = elf.len();
        let section = |name: u32, offset: usize, size: usize| {
            let mut header = vec![0u8; 64];
            header[..4].copy_from_slice(&name.to_le_bytes());
            header[0x18..0x20].copy_from_slice(&(offset as u64).to_le_bytes());
            header[0x20..0x28].copy_from_slice(&(size as u64).to_le_bytes());
            header
        };
        elf.extend(section(0, 0, 0));
        elf.extend(section(1, 0, 0));
        elf.extend(section(7, 0, 0));
        elf.extend(section(12, names_at, names.len()));
        elf[0x28..0x30].copy_from_slice(&(table as u64).to_le_bytes());
        elf[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        elf[0x3c..0x3e].copy_from_slice(&4u16.to_le_bytes());
        elf[0x3e..0x40].copy_from_slice(&3u16.to_le_bytes());
        elf
    }

    fn signed(module: &[u8], signature_len: usize) -> Vec<u8> {
        let mut file = module.to_vec();
        file.extend(std::iter::repeat_n(0xab, signature_len));
        let mut info = [0u8; SIGNATURE_INFO_LEN];
        info[2] = 2; // PKEY_ID_PKCS7
        info[8..].copy_from_slice(&(signature_len as u32).to_be_bytes());
        file.extend_from_slice(&info);
        file.extend_from_slice(SIGNATURE_MAGIC);
        file
    }

    #[test]
    fn drops_the_signature_and_the_btf_name_and_moves_nothing() {
        let elf = elf_with_btf();
        let file = signed(&elf, 500);
        let slimmed = slim(&file);
        assert_eq!(slimmed.len(), elf.len());
        assert_eq!(btf_name_offset(&slimmed), None);
        let btf_header = 64 + 24 + 2 * 64; // names padded to 24, then the third header
        assert_eq!(&slimmed[btf_header..btf_header + 4], &[0, 0, 0, 0]);
        let differing = elf.iter().zip(slimmed.iter()).filter(|(a, b)| a != b).count();
        assert_eq!(differing, 1, "only sh_name of .BTF changes (7 -> 0)");
    }

    #[test]
    fn leaves_what_it_does_not_understand() {
        let not_elf = b"not a module at all".to_vec();
        assert_eq!(slim(&not_elf).as_ref(), not_elf.as_slice());
        // A signature length longer than the file: left whole.
        let mut lying = signed(b"tiny", 4);
        let at = lying.len() - SIGNATURE_MAGIC.len() - 4;
        lying[at..at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(slim(&lying).as_ref(), lying.as_slice());
        // A section table pointing past the end: the BTF name stays.
        let mut elf = elf_with_btf();
        elf[0x28..0x30].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(slim(&elf).as_ref(), elf.as_slice());
        // Cut anywhere: never a panic.
        let whole = signed(&elf_with_btf(), 64);
        for end in 0..whole.len() {
            let _ = slim(&whole[..end]);
        }
    }

    /// The guest kernel's own modules, where `scripts/install-deps.sh` put them.
    #[test]
    fn slims_the_installed_guest_modules() {
        let Ok(kernel) = crate::assets::find_guest_kernel(
            std::path::Path::new(crate::assets::DEFAULT_GUEST_DIR),
            crate::assets::KernelChoice::Debian,
        ) else {
            return;
        };
        let path = kernel.modules.join("drivers/block/virtio_blk.ko");
        let Ok(module) = std::fs::read(&path) else { return };
        let slimmed = slim(&module);
        assert!(!slimmed.ends_with(SIGNATURE_MAGIC));
        assert!(slimmed.len() < module.len());
        assert_eq!(btf_name_offset(&slimmed), None);
    }
}
