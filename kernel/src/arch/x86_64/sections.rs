//! Where the linker put the image's parts (symbols from `toro.ld`).

use core::ops::Range;

unsafe extern "C" {
    static __kernel_start: u8;
    static __text_start: u8;
    static __text_end: u8;
    static __rodata_start: u8;
    static __rodata_end: u8;
    static __kernel_end: u8;
}

/// Physical (= virtual) address ranges of the image.
pub struct Layout {
    pub image: Range<u64>,
    pub text: Range<u64>,
    pub rodata: Range<u64>,
}

/// The image layout as linked.
pub fn layout() -> Layout {
    // Only the addresses of these linker symbols are used, never their
    // contents, so taking them is sound.
    let address = |symbol: &u8| symbol as *const u8 as u64;
    // SAFETY: the symbols are defined by toro.ld; see above.
    unsafe {
        Layout {
            image: address(&__kernel_start)..address(&__kernel_end),
            text: address(&__text_start)..address(&__text_end),
            rodata: address(&__rodata_start)..address(&__rodata_end),
        }
    }
}
