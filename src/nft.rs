//! In-process nftables through libnftables (the library behind `nft`): a
//! ruleset text or a JSON listing goes in, the kernel applies the whole
//! buffer as one atomic batch. No `nft` process is ever spawned.

use std::ffi::{CStr, CString, c_char, c_int, c_uint, c_void};

use crate::error::{Error, Result};

#[link(name = "nftables")]
unsafe extern "C" {
    fn nft_ctx_new(flags: u32) -> *mut c_void;
    fn nft_ctx_free(ctx: *mut c_void);
    fn nft_ctx_buffer_output(ctx: *mut c_void) -> c_int;
    fn nft_ctx_buffer_error(ctx: *mut c_void) -> c_int;
    fn nft_ctx_get_output_buffer(ctx: *mut c_void) -> *const c_char;
    fn nft_ctx_get_error_buffer(ctx: *mut c_void) -> *const c_char;
    fn nft_ctx_output_set_flags(ctx: *mut c_void, flags: c_uint);
    fn nft_run_cmd_from_buffer(ctx: *mut c_void, buf: *const c_char) -> c_int;
}

const NFT_CTX_OUTPUT_HANDLE: c_uint = 1 << 3;
const NFT_CTX_OUTPUT_JSON: c_uint = 1 << 4;

/// One libnftables context, bound to the network namespace of the thread
/// that uses it.
pub struct Nft {
    ctx: *mut c_void,
}

impl Nft {
    pub fn new() -> Result<Self> {
        // SAFETY: plain constructor; a null return is checked.
        let ctx = unsafe { nft_ctx_new(0) };
        if ctx.is_null() {
            return Err(Error::Nft("cannot create a libnftables context".into()));
        }
        // SAFETY: ctx is valid until drop.
        unsafe {
            nft_ctx_buffer_output(ctx);
            nft_ctx_buffer_error(ctx);
        }
        Ok(Nft { ctx })
    }

    /// Run commands (one atomic transaction); returns the output text.
    pub fn run(&mut self, commands: &str) -> Result<String> {
        self.run_with_flags(commands, 0)
    }

    /// List in JSON with rule handles.
    pub fn list_json(&mut self, what: &str) -> Result<serde_json::Value> {
        let text = self.run_with_flags(
            &format!("list {what}"),
            NFT_CTX_OUTPUT_JSON | NFT_CTX_OUTPUT_HANDLE,
        )?;
        serde_json::from_str(&text)
            .map_err(|e| Error::Nft(format!("unreadable JSON from libnftables: {e}")))
    }

    fn run_with_flags(&mut self, commands: &str, flags: c_uint) -> Result<String> {
        let buf =
            CString::new(commands).map_err(|_| Error::Nft("ruleset contains a NUL byte".into()))?;
        // SAFETY: ctx is valid; buffers returned by libnftables stay valid
        // until the next command on this context, and we copy them at once.
        unsafe {
            nft_ctx_output_set_flags(self.ctx, flags);
            let rc = nft_run_cmd_from_buffer(self.ctx, buf.as_ptr());
            let out = text(nft_ctx_get_output_buffer(self.ctx));
            let err = text(nft_ctx_get_error_buffer(self.ctx));
            if rc != 0 {
                return Err(Error::Nft(if err.trim().is_empty() {
                    format!("command failed: {commands}")
                } else {
                    err.trim().to_string()
                }));
            }
            Ok(out)
        }
    }
}

unsafe fn text(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: libnftables returns NUL-terminated buffers.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

impl Drop for Nft {
    fn drop(&mut self) {
        // SAFETY: ctx came from nft_ctx_new and is freed once.
        unsafe { nft_ctx_free(self.ctx) }
    }
}
