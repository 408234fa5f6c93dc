//! User and group names as the control socket's `owner` and `group` keys name them: a numeric
//! id as it is, else looked up with `getpwnam_r` / `getgrnam_r` (the system's user database,
//! /etc/passwd or NSS). Read when the config is checked, and again when the socket is bound.

/// A user name or numeric id.
pub fn user_id(name: &str) -> Result<u32, String> {
    // SAFETY (the closure): the pointers come from `lookup`, valid for the call.
    lookup(
        name,
        "user",
        |name, entry, buffer, size, found| unsafe {
            libc::getpwnam_r(name, entry, buffer, size, found)
        },
        |entry: &libc::passwd| entry.pw_uid,
    )
}

/// A group name or numeric id.
pub fn group_id(name: &str) -> Result<u32, String> {
    // SAFETY (the closure): the pointers come from `lookup`, valid for the call.
    lookup(
        name,
        "group",
        |name, entry, buffer, size, found| unsafe {
            libc::getgrnam_r(name, entry, buffer, size, found)
        },
        |entry: &libc::group| entry.gr_gid,
    )
}

/// A numeric id as it is, or the id of the entry `call` (`getpwnam_r`, `getgrnam_r`) finds
/// for `name`.
fn lookup<E>(
    name: &str,
    what: &str,
    call: impl FnOnce(*const libc::c_char, *mut E, *mut libc::c_char, usize, *mut *mut E) -> i32,
    id: impl FnOnce(&E) -> u32,
) -> Result<u32, String> {
    if let Ok(id) = name.parse::<u32>() {
        return Ok(id);
    }
    let c_name = std::ffi::CString::new(name).map_err(|_| format!("bad {what} name {name:?}"))?;
    // SAFETY: an all-zero passwd or group is a valid value to be filled in.
    let mut entry: E = unsafe { std::mem::zeroed() };
    let mut buffer = vec![0 as libc::c_char; 16 * 1024];
    let mut found: *mut E = std::ptr::null_mut();
    let code = call(
        c_name.as_ptr(),
        &mut entry,
        buffer.as_mut_ptr(),
        buffer.len(),
        &mut found,
    );
    if code != 0 || found.is_null() {
        return Err(format!("no {what} named {name:?}"));
    }
    Ok(id(&entry))
}
