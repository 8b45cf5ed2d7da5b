//! In-process nftables through libnftables (the library behind `nft`): a
//! ruleset text or a JSON listing goes in, the kernel applies the whole
//! buffer as one atomic batch. No `nft` process is ever spawned.
//!
//! The library is opened with dlopen the first time a firewall change is
//! made, so the hot path of an attach (which never touches nftables) does
//! not pay for loading it and its dependencies at every process start.

use std::ffi::{CStr, CString, c_char, c_int, c_uint, c_void};

use libloading::{Library, Symbol};

use crate::error::{Error, Result};

const LIBRARY: &str = "libnftables.so.1";
const NFT_CTX_OUTPUT_HANDLE: c_uint = 1 << 3;
const NFT_CTX_OUTPUT_JSON: c_uint = 1 << 4;

type CtxNew = unsafe extern "C" fn(u32) -> *mut c_void;
type CtxFree = unsafe extern "C" fn(*mut c_void);
type CtxInt = unsafe extern "C" fn(*mut c_void) -> c_int;
type CtxBuffer = unsafe extern "C" fn(*mut c_void) -> *const c_char;
type CtxSetFlags = unsafe extern "C" fn(*mut c_void, c_uint);
type RunCmd = unsafe extern "C" fn(*mut c_void, *const c_char) -> c_int;

/// One libnftables context, bound to the network namespace of the thread
/// that uses it.
pub struct Nft {
    lib: Library,
    ctx: *mut c_void,
}

fn symbol<'l, T>(lib: &'l Library, name: &[u8]) -> Result<Symbol<'l, T>> {
    // SAFETY: every symbol is looked up with the C signature libnftables.h declares.
    unsafe { lib.get(name) }.map_err(|e| Error::Nft(format!("{LIBRARY}: {e}")))
}

impl Nft {
    pub fn new() -> Result<Self> {
        // SAFETY: loading a system library whose initialisers are plain C.
        let lib = unsafe { Library::new(LIBRARY) }.map_err(|e| {
            Error::Nft(format!("cannot load {LIBRARY} (install libnftables1): {e}"))
        })?;
        let ctx = {
            let new: Symbol<CtxNew> = symbol(&lib, b"nft_ctx_new")?;
            let buffer_output: Symbol<CtxInt> = symbol(&lib, b"nft_ctx_buffer_output")?;
            let buffer_error: Symbol<CtxInt> = symbol(&lib, b"nft_ctx_buffer_error")?;
            // SAFETY: plain constructor; a null return is checked before use.
            let ctx = unsafe { new(0) };
            if ctx.is_null() {
                return Err(Error::Nft("cannot create a libnftables context".into()));
            }
            // SAFETY: ctx is valid until drop.
            unsafe {
                buffer_output(ctx);
                buffer_error(ctx);
            }
            ctx
        };
        Ok(Nft { lib, ctx })
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
        let set_flags: Symbol<CtxSetFlags> = symbol(&self.lib, b"nft_ctx_output_set_flags")?;
        let run: Symbol<RunCmd> = symbol(&self.lib, b"nft_run_cmd_from_buffer")?;
        let output: Symbol<CtxBuffer> = symbol(&self.lib, b"nft_ctx_get_output_buffer")?;
        let error: Symbol<CtxBuffer> = symbol(&self.lib, b"nft_ctx_get_error_buffer")?;
        // SAFETY: ctx is valid; buffers returned by libnftables stay valid
        // until the next command on this context, and we copy them at once.
        unsafe {
            set_flags(self.ctx, flags);
            let rc = run(self.ctx, buf.as_ptr());
            let out = text(output(self.ctx));
            let err = text(error(self.ctx));
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
        if let Ok(free) = symbol::<CtxFree>(&self.lib, b"nft_ctx_free") {
            // SAFETY: ctx came from nft_ctx_new and is freed once, before the library is unloaded.
            unsafe { free(self.ctx) }
        }
    }
}
