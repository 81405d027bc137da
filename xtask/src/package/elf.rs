//! The checks a binary must pass before it is packaged: built for the
//! package's CPU, and statically linked, since OpenWrt's C library is not
//! the one the binary was built against. Field offsets follow the System V
//! ABI ("ELF Header", "Program Header").

use anyhow::{Result, bail};

const PT_INTERP: u32 = 3;
const PT_DYNAMIC: u32 = 2;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;

/// Checks the ELF header of `bytes`: 64- or 32-bit little endian, for
/// `machine`, with no interpreter and no shared library it needs. Rust's
/// musl targets link static PIE binaries, which keep a dynamic section for
/// their own relocations, so that section may exist but name no library.
pub fn check_static_executable(bytes: &[u8], machine: u16) -> Result<()> {
    if bytes.len() < 52 || &bytes[..4] != b"\x7fELF" {
        bail!("not an ELF file");
    }
    let is_64 = match bytes[4] {
        1 => false,
        2 => true,
        class => bail!("unknown ELF class {class}"),
    };
    if bytes[5] != 1 {
        bail!("not little endian");
    }
    let half = |offset: usize| u16::from_le_bytes([bytes[offset], bytes[offset + 1]]);
    let word = |offset: usize| u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap());
    let long = |offset: usize| u64::from_le_bytes(bytes[offset..offset + 8].try_into().unwrap());
    let found = half(18);
    if found != machine {
        bail!("ELF machine is {found}, expected {machine}");
    }
    let (phoff, phentsize, phnum) = if is_64 {
        (long(32) as usize, half(54) as usize, half(56) as usize)
    } else {
        (word(28) as usize, half(42) as usize, half(44) as usize)
    };
    for index in 0..phnum {
        let offset = phoff + index * phentsize;
        if offset + phentsize > bytes.len() {
            bail!("program header {index} lies past the end of the file");
        }
        match word(offset) {
            PT_INTERP => bail!("dynamically linked: it names an ELF interpreter"),
            PT_DYNAMIC => {
                let (file_offset, file_size) = if is_64 {
                    (long(offset + 8) as usize, long(offset + 32) as usize)
                } else {
                    (word(offset + 4) as usize, word(offset + 16) as usize)
                };
                let entry_size = if is_64 { 16 } else { 8 };
                let end = (file_offset + file_size).min(bytes.len());
                for entry in (file_offset..end).step_by(entry_size) {
                    if entry + entry_size > end {
                        break;
                    }
                    let tag = if is_64 { long(entry) } else { u64::from(word(entry)) };
                    match tag {
                        DT_NULL => break,
                        DT_NEEDED => bail!("dynamically linked: it needs a shared library"),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}
