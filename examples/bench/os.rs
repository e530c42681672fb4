//! What the two benchmark examples (`bench`, `bench_streams`) need of the OS: pinning threads
//! to cores and room for thousands of sockets. `bench_streams` includes this file by its path.

/// Restricts thread `tid` (0 = the calling thread) to `cores`; threads it starts inherit this.
pub fn pin(tid: libc::pid_t, cores: &[usize]) -> std::result::Result<(), String> {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET writes within it for core < CPU_SETSIZE.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cores {
            libc::CPU_SET(c, &mut set);
        }
        if libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(format!("sched_setaffinity: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// One socket per call or connection: lift the soft open-files limit to the hard one.
pub fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit on a valid, initialised struct.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
