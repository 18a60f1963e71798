#include "store/store.h"

#include <openssl/evp.h>

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace of::store {
namespace {

class Fd {
public:
    Fd() = default;
    explicit Fd(int fd) : fd_(fd) {}
    Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
    Fd& operator=(Fd&& o) noexcept {
        if (this != &o) {
            reset();
            fd_ = std::exchange(o.fd_, -1);
        }
        return *this;
    }
    ~Fd() { reset(); }
    int get() const { return fd_; }
    int release() { return std::exchange(fd_, -1); }
    void reset() {
        if (fd_ >= 0) ::close(fd_);
        fd_ = -1;
    }

private:
    int fd_ = -1;
};

std::atomic<uint64_t> g_temp_seq{0};
constexpr std::string_view kTempTag = ".ingest-";

std::string join(const std::string& dir, const std::string& file) { return dir + "/" + file; }
std::string stripe_file(const std::string& name) { return name + ".stripe"; }
std::string record_file(const std::string& name) { return name + ".idx"; }
std::string temp_file(const std::string& final_name, uint64_t seq) {
    return "." + final_name + std::string(kTempTag) + std::to_string(getpid()) + "-" +
           std::to_string(seq);
}

// The pid in a temporary file name of ours (".NAME.{stripe,idx}.ingest-PID-SEQ"), or 0.
pid_t temp_owner(const std::string& f) {
    if (f.size() < 2 || f[0] != '.') return 0;
    size_t tag = f.rfind(kTempTag);
    if (tag == std::string::npos) return 0;
    std::string rest = f.substr(tag + kTempTag.size());
    size_t dash = rest.find('-');
    if (dash == std::string::npos || dash == 0 || dash + 1 == rest.size()) return 0;
    if (rest.find_first_not_of("0123456789-") != std::string::npos) return 0;
    std::string stem = f.substr(1, tag - 1);
    if (!(stem.ends_with(".stripe") || stem.ends_with(".idx"))) return 0;
    long pid = std::strtol(rest.substr(0, dash).c_str(), nullptr, 10);
    return pid > 0 && pid <= INT_MAX ? pid_t(pid) : 0;
}

Result<std::string> canonical_dir(const std::string& path, const char* what) {
    if (path.empty()) return make_error(EINVAL, std::string(what) + " path is empty");
    char buf[PATH_MAX];
    if (!::realpath(path.c_str(), buf)) return errno_error(std::string(what) + " " + path);
    struct stat st{};
    if (::stat(buf, &st) != 0) return errno_error(std::string(what) + " " + path);
    if (!S_ISDIR(st.st_mode)) return make_error(ENOTDIR, std::string(what) + " " + path + " is not a directory");
    return std::string(buf);
}

Status write_all_at(int fd, const uint8_t* d, size_t n, uint64_t off, const std::string& path) {
    while (n > 0) {
        ssize_t w = ::pwrite(fd, d, n, off_t(off));
        if (w < 0) {
            if (errno == EINTR) continue;
            return errno_error("write " + path);
        }
        d += w;
        n -= size_t(w);
        off += uint64_t(w);
    }
    return {};
}

// Reads until n bytes or end of file; returns the count.
Result<size_t> read_full(int fd, uint8_t* d, size_t n, const std::string& path) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = ::read(fd, d + got, n - got);
        if (r < 0) {
            if (errno == EINTR) continue;
            return errno_error("read " + path);
        }
        if (r == 0) break;
        got += size_t(r);
    }
    return got;
}

Result<std::vector<uint8_t>> read_file(const std::string& path, size_t max) {
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (fd.get() < 0) return errno_error("open " + path);
    struct stat st{};
    if (::fstat(fd.get(), &st) != 0) return errno_error("stat " + path);
    if (!S_ISREG(st.st_mode)) return make_error(EINVAL, path + " is not a regular file");
    if (uint64_t(st.st_size) > max)
        return make_error(EFBIG, path + " is " + std::to_string(st.st_size) + " bytes, over the " +
                                     std::to_string(max) + " limit");
    std::vector<uint8_t> buf(size_t(st.st_size));
    auto n = read_full(fd.get(), buf.data(), buf.size(), path);
    if (!n) return n.error();
    buf.resize(*n);
    return buf;
}

Status fsync_dir(const std::string& dir) {
    Fd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (fd.get() < 0) return errno_error("open " + dir);
    if (::fsync(fd.get()) != 0) return errno_error("fsync " + dir);
    return {};
}

Result<std::vector<std::string>> list_dir(const std::string& dir) {
    DIR* d = ::opendir(dir.c_str());
    if (!d) return errno_error("open directory " + dir);
    std::vector<std::string> out;
    errno = 0;
    while (dirent* e = ::readdir(d)) out.emplace_back(e->d_name);
    int err = errno;
    ::closedir(d);
    if (err) return errno_error("read directory " + dir, err);
    std::sort(out.begin(), out.end());
    return out;
}

// Moves from into to, failing with EEXIST instead of replacing an existing file.
Status rename_noreplace(const std::string& from, const std::string& to) {
    if (::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE) == 0) return {};
    if (errno != EINVAL && errno != ENOSYS) return errno_error("rename to " + to);
    // File systems without RENAME_NOREPLACE: link() is just as exclusive.
    if (::link(from.c_str(), to.c_str()) != 0) return errno_error("link to " + to);
    ::unlink(from.c_str());
    return {};
}

// Removes, on destruction, every file it still lists: a failed ingest leaves nothing.
struct Leftovers {
    std::vector<std::string> paths;
    ~Leftovers() {
        for (const auto& p : paths) ::unlink(p.c_str());
    }
};

}  // namespace

Asset::Asset(AssetRecord r) : record_(std::move(r)) {
    for (const auto& d : record_.disks) stripes_.push_back(join(d, stripe_file(record_.name)));
    fds_.assign(record_.disks.size(), -1);
}

Asset::~Asset() {
    for (int fd : fds_)
        if (fd >= 0) ::close(fd);
}

uint64_t Asset::extent_count() const {
    return (bytes() + extent_size() - 1) / extent_size();
}

std::optional<ExtentLocation> Asset::extent_location(uint64_t i) const {
    if (i >= extent_count()) return std::nullopt;
    uint32_t n = disk_count();
    ExtentLocation loc;
    loc.disk = uint32_t(i % n);
    loc.fd = fds_[loc.disk];
    loc.offset = (i / n) * extent_size();
    loc.length = std::min(extent_size(), bytes() - i * extent_size());
    return loc;
}

uint64_t Asset::stripe_bytes(uint32_t d) const {
    uint64_t e = extent_count();
    uint32_t n = disk_count();
    if (d >= e) return 0;
    uint64_t k = (e - d + n - 1) / n;  // extents d, d+n, ... below e
    uint64_t last = d + (k - 1) * n;
    return (k - 1) * extent_size() + extent_location(last)->length;
}

AssetInfo Asset::info() const {
    const auto& ix = index();
    AssetInfo a;
    a.name = name();
    a.bytes = bytes();
    a.packets = ix.packet_count();
    a.duration_ns = ix.duration_ns();
    a.bitrate_bps = ix.bitrate_bps();
    a.pcr_pid = ix.pcr_pid();
    a.pcr_count = ix.pcrs().size();
    a.rap_count = ix.raps().size();
    a.extent_size = extent_size();
    a.extents = extent_count();
    a.disks = disk_count();
    a.sha256 = record_.sha256;
    return a;
}

Result<std::unique_ptr<AssetStore>> AssetStore::open(StoreConfig config) {
    if (auto s = validate_extent_size(config.extent_size); !s) return s.error();
    if (config.disks.empty() || config.disks.size() > kMaxDisks)
        return make_error(EINVAL, "the store needs 1 to " + std::to_string(kMaxDisks) +
                                      " disk directories, got " + std::to_string(config.disks.size()));
    auto cat = canonical_dir(config.catalog_dir, "catalog directory");
    if (!cat) return cat.error();
    config.catalog_dir = *cat;
    std::set<std::string> seen;
    for (auto& d : config.disks) {
        auto c = canonical_dir(d, "disk directory");
        if (!c) return c.error();
        if (c->size() > kMaxDiskPath) return make_error(ENAMETOOLONG, "disk directory " + d);
        if (!seen.insert(*c).second)
            return make_error(EINVAL, "disk directory " + d + " is listed twice (as " + *c + ")");
        d = *c;
    }
    std::unique_ptr<AssetStore> s(new AssetStore(std::move(config)));
    s->load_catalog();
    return s;
}

void AssetStore::clean_leftovers(const std::string& dir) {
    auto names = list_dir(dir);
    if (!names) {
        problems_.push_back({dir, names.error()});
        return;
    }
    for (const auto& f : *names) {
        pid_t owner = temp_owner(f);
        if (owner == 0 || owner == getpid()) continue;
        if (::kill(owner, 0) == 0 || errno == EPERM) continue;  // its ingest may still be running
        std::string p = join(dir, f);
        if (::unlink(p.c_str()) == 0)
            problems_.push_back({p, make_error(ESTALE, "removed the leftover of an interrupted ingest")});
        else
            problems_.push_back({p, errno_error("remove leftover of an interrupted ingest " + p)});
    }
}

Result<std::shared_ptr<Asset>> AssetStore::load_record(const std::string& path,
                                                       const std::string& name) {
    auto bytes = read_file(path, kMaxRecordBytes);
    if (!bytes) return bytes.error();
    auto rec = decode_record(*bytes);
    if (!rec) return rec.error();
    if (rec->name != name)
        return mpegts::make_index_error(mpegts::IndexError::kCorruptIndex,
                                        "catalog record names asset '" + rec->name + "'");
    for (const auto& d : rec->disks)
        if (std::find(config_.disks.begin(), config_.disks.end(), d) == config_.disks.end())
            return make_error(ENOENT, "asset is striped over " + d + ", which is not a configured disk");
    std::shared_ptr<Asset> a(new Asset(std::move(*rec)));
    for (uint32_t d = 0; d < a->disk_count(); ++d) {
        const std::string& sp = a->stripe_path(d);
        Fd fd(::open(sp.c_str(), O_RDONLY | O_CLOEXEC));
        if (fd.get() < 0) return errno_error("open stripe file " + sp);
        struct stat st{};
        if (::fstat(fd.get(), &st) != 0) return errno_error("stat " + sp);
        if (uint64_t(st.st_size) != a->stripe_bytes(d))
            return make_error(EIO, "stripe file " + sp + " is " + std::to_string(st.st_size) +
                                       " bytes, the record expects " + std::to_string(a->stripe_bytes(d)));
        a->fds_[d] = fd.release();
    }
    return a;
}

void AssetStore::load_catalog() {
    clean_leftovers(config_.catalog_dir);
    for (const auto& d : config_.disks)
        if (d != config_.catalog_dir) clean_leftovers(d);
    auto names = list_dir(config_.catalog_dir);
    if (!names) return;  // reported by clean_leftovers
    std::set<std::string> recorded;
    for (const auto& f : *names) {
        if (f.size() <= 4 || !f.ends_with(".idx") || f[0] == '.') continue;
        std::string name = f.substr(0, f.size() - 4);
        std::string path = join(config_.catalog_dir, f);
        recorded.insert(name);
        if (auto s = validate_asset_name(name); !s) {
            problems_.push_back({path, s.error()});
            continue;
        }
        auto a = load_record(path, name);
        if (!a) {
            problems_.push_back({path, a.error()});
            continue;
        }
        assets_.emplace(name, std::move(*a));
    }
    // Stripe files without a record: an interrupted ingest or remove left them; say so.
    for (const auto& d : config_.disks) {
        auto files = list_dir(d);
        if (!files) continue;
        for (const auto& f : *files) {
            if (f[0] == '.' || !f.ends_with(".stripe")) continue;
            std::string name = f.substr(0, f.size() - 7);
            if (recorded.count(name)) continue;
            problems_.push_back({join(d, f), make_error(ENOENT, "stripe file without a catalog record "
                                                                "(delete it, or ingest '" + name + "' again)")});
        }
    }
}

std::vector<AssetInfo> AssetStore::list() const {
    std::lock_guard lk(mu_);
    std::vector<AssetInfo> out;
    out.reserve(assets_.size());
    for (const auto& [n, a] : assets_) out.push_back(a->info());
    return out;
}

std::shared_ptr<const Asset> AssetStore::find(std::string_view name) const {
    std::lock_guard lk(mu_);
    auto it = assets_.find(name);
    return it == assets_.end() ? nullptr : it->second;
}

Status AssetStore::remove(const std::string& name) {
    if (auto s = validate_asset_name(name); !s) return s;
    std::shared_ptr<const Asset> a;
    {
        std::lock_guard lk(mu_);
        if (pending_.count(name))
            return make_error(EBUSY, "asset '" + name + "' is being ingested or removed");
        auto it = assets_.find(name);
        if (it == assets_.end()) return remove_unloaded(name);
        a = it->second;
        assets_.erase(it);
        pending_.insert(name);  // no ingest of this name until its files are gone
    }
    auto release = [&] {
        std::lock_guard lk(mu_);
        pending_.erase(name);
    };
    std::string rec = join(config_.catalog_dir, record_file(name));
    // The record goes first: without it the asset no longer exists, whatever happens next.
    if (::unlink(rec.c_str()) != 0 && errno != ENOENT) {
        auto e = errno_error("remove " + rec);
        std::lock_guard lk(mu_);
        assets_.emplace(name, a);
        pending_.erase(name);
        return e;
    }
    Status result;
    if (auto s = fsync_dir(config_.catalog_dir); !s) result = s;
    for (uint32_t d = 0; d < a->disk_count(); ++d) {
        if (::unlink(a->stripe_path(d).c_str()) != 0 && errno != ENOENT && result.ok())
            result = make_error(errno, "asset '" + name + "' removed, but its stripe file " +
                                           a->stripe_path(d) + " stays: " + std::strerror(errno));
    }
    release();
    return result;
}

// A name whose record failed to load (corrupt, or striped over a disk no longer configured) or
// whose stripes were orphaned: delete what is there, so an operator can clear it. Called locked.
Status AssetStore::remove_unloaded(const std::string& name) {
    std::vector<std::string> paths{join(config_.catalog_dir, record_file(name))};
    for (const auto& d : config_.disks) paths.push_back(join(d, stripe_file(name)));
    bool found = false;
    Status result;
    for (const auto& p : paths) {
        if (::unlink(p.c_str()) == 0)
            found = true;
        else if (errno != ENOENT && result.ok())
            result = errno_error("remove " + p);
    }
    if (!found && result.ok()) return make_error(ENOENT, "no asset '" + name + "'");
    return result;
}

Result<AssetInfo> AssetStore::ingest(const std::string& source_path, const std::string& name,
                                     const IngestOptions& options) {
    if (auto s = validate_asset_name(name); !s) return s.error();
    {
        std::lock_guard lk(mu_);
        if (assets_.count(name)) return make_error(EEXIST, "asset '" + name + "' already exists");
        if (pending_.count(name))
            return make_error(EBUSY, "asset '" + name + "' is being ingested or removed");
        pending_.insert(name);
    }
    auto r = ingest_locked_name(source_path, name, options);
    std::lock_guard lk(mu_);
    pending_.erase(name);
    return r;
}

Result<AssetInfo> AssetStore::ingest_locked_name(const std::string& source_path,
                                                 const std::string& name,
                                                 const IngestOptions& options) {
    const uint64_t es = config_.extent_size;
    const uint32_t nd = uint32_t(config_.disks.size());
    std::string rec_final = join(config_.catalog_dir, record_file(name));
    if (::access(rec_final.c_str(), F_OK) == 0)
        return make_error(EEXIST, "asset '" + name + "' already has a catalog record " + rec_final +
                                      " (it failed to load when the store opened: remove it first)");

    Fd src(::open(source_path.c_str(), O_RDONLY | O_CLOEXEC));
    if (src.get() < 0) return errno_error("open " + source_path);
    struct stat st{};
    if (::fstat(src.get(), &st) != 0) return errno_error("stat " + source_path);
    if (!S_ISREG(st.st_mode)) return make_error(EINVAL, source_path + " is not a regular file");
    const uint64_t total = uint64_t(st.st_size);
    if (total > config_.limits.max_bytes)
        return mpegts::make_index_error(mpegts::IndexError::kTooLarge,
                                        source_path + " is " + std::to_string(total) +
                                            " bytes, more than the limit of " +
                                            std::to_string(config_.limits.max_bytes));
    ::posix_fadvise(src.get(), 0, 0, POSIX_FADV_SEQUENTIAL);

    // Room on every disk for its share, checked before writing anything.
    uint64_t extents = (total + es - 1) / es;
    for (uint32_t d = 0; d < nd; ++d) {
        uint64_t need = extents > d ? ((extents - d + nd - 1) / nd) * es : 0;
        struct statvfs vfs{};
        if (need && ::statvfs(config_.disks[d].c_str(), &vfs) == 0 &&
            uint64_t(vfs.f_bavail) * vfs.f_frsize < need)
            return make_error(ENOSPC, "disk " + config_.disks[d] + " has " +
                                          std::to_string(uint64_t(vfs.f_bavail) * vfs.f_frsize) +
                                          " bytes free, the asset needs up to " + std::to_string(need));
    }

    Leftovers leftovers;
    uint64_t seq = g_temp_seq.fetch_add(1);
    std::vector<std::string> tmp(nd), fin(nd);
    std::vector<Fd> out(nd);
    for (uint32_t d = 0; d < nd; ++d) {
        fin[d] = join(config_.disks[d], stripe_file(name));
        tmp[d] = join(config_.disks[d], temp_file(stripe_file(name), seq));
        out[d] = Fd(::open(tmp[d].c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
        if (out[d].get() < 0) return errno_error("create " + tmp[d]);
        leftovers.paths.push_back(tmp[d]);
    }

    mpegts::Indexer indexer(config_.limits);
    // The content's digest: a partner matches assets by it, not by name and size (docs/failover.md).
    std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> md(EVP_MD_CTX_new(), EVP_MD_CTX_free);
    if (!md || EVP_DigestInit_ex(md.get(), EVP_sha256(), nullptr) != 1) return make_error(ENOMEM, "SHA-256 context");
    std::vector<uint8_t> buf(es);
    uint64_t copied = 0;
    for (uint64_t i = 0;; ++i) {
        auto got = read_full(src.get(), buf.data(), buf.size(), source_path);
        if (!got) return got.error();
        if (*got == 0) break;
        if (auto s = indexer.feed(std::span(buf.data(), *got)); !s) return s.error();
        EVP_DigestUpdate(md.get(), buf.data(), *got);
        // Looks like TS so far: refuse a truncated file now rather than after copying all of it.
        // (Only with more extents to come: then the first one, >= 1316 bytes, passed the sync
        // checks, and a file that is not TS at all is still reported as such.)
        if (i == 0 && total > es && total % mpegts::kPacketSize != 0)
            return mpegts::make_index_error(
                mpegts::IndexError::kTruncated,
                std::to_string(total) + " bytes is not a multiple of 188: the last packet has " +
                    std::to_string(total % mpegts::kPacketSize) + " bytes");
        uint32_t d = uint32_t(i % nd);
        if (auto s = write_all_at(out[d].get(), buf.data(), *got, (i / nd) * es, tmp[d]); !s)
            return s.error();
        copied += *got;
        if (options.progress && !options.progress(copied, total))
            return make_error(ECANCELED, "ingest of '" + name + "' cancelled");
        if (*got < buf.size()) break;
    }
    auto index = indexer.finish();
    if (!index) return index.error();

    for (uint32_t d = 0; d < nd; ++d)
        if (::fdatasync(out[d].get()) != 0) return errno_error("sync " + tmp[d]);

    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned digest_len = 0;
    if (EVP_DigestFinal_ex(md.get(), digest, &digest_len) != 1) return make_error(EIO, "SHA-256 of " + source_path);
    std::string sha256;
    for (unsigned i = 0; i < digest_len; ++i) {
        static const char kHex[] = "0123456789abcdef";
        sha256 += kHex[digest[i] >> 4];
        sha256 += kHex[digest[i] & 15];
    }
    std::shared_ptr<Asset> asset(new Asset(AssetRecord{name, es, config_.disks, std::move(*index), std::move(sha256)}));
    for (uint32_t d = 0; d < nd; ++d) {
        struct stat sst{};
        if (::fstat(out[d].get(), &sst) != 0) return errno_error("stat " + tmp[d]);
        if (uint64_t(sst.st_size) != asset->stripe_bytes(d))
            return make_error(EIO, tmp[d] + " has " + std::to_string(sst.st_size) + " bytes, expected " +
                                       std::to_string(asset->stripe_bytes(d)) +
                                       " (did the source change while it was copied?)");
        Fd rd(::open(tmp[d].c_str(), O_RDONLY | O_CLOEXEC));
        if (rd.get() < 0) return errno_error("open " + tmp[d]);
        asset->fds_[d] = rd.release();
    }

    auto record = encode_record(asset->record_);
    std::string rec_tmp = join(config_.catalog_dir, temp_file(record_file(name), seq));
    {
        Fd rf(::open(rec_tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
        if (rf.get() < 0) return errno_error("create " + rec_tmp);
        leftovers.paths.push_back(rec_tmp);
        if (auto s = write_all_at(rf.get(), record.data(), record.size(), 0, rec_tmp); !s) return s.error();
        if (::fsync(rf.get()) != 0) return errno_error("sync " + rec_tmp);
    }

    // Stripes take their names first; the record, renamed last, is what makes the asset exist.
    for (uint32_t d = 0; d < nd; ++d) {
        if (::rename(tmp[d].c_str(), fin[d].c_str()) != 0) return errno_error("rename to " + fin[d]);
        leftovers.paths.push_back(fin[d]);
    }
    for (uint32_t d = 0; d < nd; ++d)
        if (auto s = fsync_dir(config_.disks[d]); !s) return s.error();
    if (auto s = rename_noreplace(rec_tmp, rec_final); !s) return s.error();
    leftovers.paths.clear();
    // The asset exists now; a failed directory sync only weakens durability across a crash.
    (void)fsync_dir(config_.catalog_dir);

    AssetInfo info = asset->info();
    std::lock_guard lk(mu_);
    assets_.emplace(name, std::move(asset));
    return info;
}

}  // namespace of::store
