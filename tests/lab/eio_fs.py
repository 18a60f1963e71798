#!/usr/bin/python3
"""A disk that fails on demand: a FUSE passthrough of BACKING at MOUNTPOINT whose reads return EIO
(from the kernel, as a dying disk's would) once the file ARM exists.

eio_fs.py BACKING MOUNTPOINT ARM     runs in the foreground until unmounted

Mounted with direct_io, so that every read reaches this process (no page cache in between) and
the failure shows at the next extent the daemon reads. Writes, creates, renames and the rest pass
through untouched, so an asset can be added to the disk before it fails.
"""
import errno
import os
import sys

from fusepy import FUSE, FuseOSError, Operations


class FailingDisk(Operations):
    def __init__(self, root, arm):
        self.root, self.arm, self.failed_reads = root, arm, 0

    def _p(self, path):
        return os.path.join(self.root, path.lstrip("/"))

    # ---- the failure ----
    def read(self, path, size, offset, fh):
        if os.path.exists(self.arm):
            self.failed_reads += 1
            raise FuseOSError(errno.EIO)
        return os.pread(fh, size, offset)

    # ---- passthrough ----
    def access(self, path, mode):
        if not os.access(self._p(path), mode):
            raise FuseOSError(errno.EACCES)

    def chmod(self, path, mode):
        return os.chmod(self._p(path), mode)

    def chown(self, path, uid, gid):
        return os.chown(self._p(path), uid, gid)

    def getattr(self, path, fh=None):
        st = os.lstat(self._p(path))
        return {k: getattr(st, k) for k in ("st_atime", "st_ctime", "st_gid", "st_mode", "st_mtime",
                                            "st_nlink", "st_size", "st_uid", "st_blocks")}

    def readdir(self, path, fh):
        return [".", ".."] + os.listdir(self._p(path))

    def mkdir(self, path, mode):
        return os.mkdir(self._p(path), mode)

    def rmdir(self, path):
        return os.rmdir(self._p(path))

    def unlink(self, path):
        return os.unlink(self._p(path))

    def rename(self, old, new):
        return os.rename(self._p(old), self._p(new))

    def statfs(self, path):
        sv = os.statvfs(self._p(path))
        return {k: getattr(sv, k) for k in ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail",
                                            "f_ffree", "f_files", "f_flag", "f_frsize", "f_namemax")}

    def utimens(self, path, times=None):
        return os.utime(self._p(path), times)

    def open(self, path, flags):
        return os.open(self._p(path), flags & ~os.O_DIRECT)

    def create(self, path, mode, fi=None):
        return os.open(self._p(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)

    def write(self, path, data, offset, fh):
        return os.pwrite(fh, data, offset)

    def truncate(self, path, length, fh=None):
        with open(self._p(path), "r+b") as f:
            f.truncate(length)

    def flush(self, path, fh):
        return 0

    def release(self, path, fh):
        return os.close(fh)

    def fsync(self, path, datasync, fh):
        return os.fdatasync(fh) if datasync else os.fsync(fh)


def main(argv):
    if len(argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    backing, mountpoint, arm = argv[1:]
    FUSE(FailingDisk(os.path.abspath(backing), os.path.abspath(arm)), mountpoint, foreground=True,
         nothreads=False, allow_other=True, direct_io=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
