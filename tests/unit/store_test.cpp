// Asset store: names, configuration, round-robin striping with byte-exact reassembly, failed
// ingests leaving nothing, corrupt catalog records, removal, leftovers, a real ffmpeg asset.
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <openssl/evp.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <mutex>
#include <thread>

#include "mpegts/crc.h"
#include "mpegts/indexer.h"
#include "store/record.h"
#include "store/store.h"
#include "ts_fixture.h"

namespace {

std::string sha256_hex(const std::vector<uint8_t>& data) {
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    EVP_Digest(data.data(), data.size(), d, &n, EVP_sha256(), nullptr);
    std::string hex;
    char b[3];
    for (unsigned i = 0; i < n; ++i) {
        snprintf(b, sizeof b, "%02x", d[i]);
        hex += b;
    }
    return hex;
}

namespace fs = std::filesystem;
using namespace of::store;
using of::mpegts::IndexError;
using oftest::Bytes;
using oftest::make_ts;
using oftest::StreamSpec;

constexpr uint64_t kEs = 1316 * 4;  // small extents: many of them in a small asset

Bytes read_all(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    return Bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

void write_all(const std::string& path, const Bytes& b) {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
}

// Every file under a directory tree (hidden ones too), with sizes.
std::map<std::string, uintmax_t> snapshot(const std::string& root) {
    std::map<std::string, uintmax_t> m;
    for (auto& e : fs::recursive_directory_iterator(root))
        if (e.is_regular_file()) m[e.path().string()] = e.file_size();
    return m;
}

class StoreTest : public ::testing::Test {
protected:
    void SetUp() override {
        char tmpl[] = "/tmp/of-store-test-XXXXXX";
        ASSERT_NE(mkdtemp(tmpl), nullptr);
        root_ = tmpl;
        for (const char* d : {"catalog", "d0", "d1", "d2", "src"}) fs::create_directory(root_ + "/" + d);
    }
    void TearDown() override { fs::remove_all(root_); }

    StoreConfig config(std::vector<std::string> disks = {"d0", "d1", "d2"}, uint64_t es = kEs) {
        StoreConfig c;
        c.catalog_dir = root_ + "/catalog";
        for (auto& d : disks) c.disks.push_back(root_ + "/" + d);
        c.extent_size = es;
        return c;
    }
    std::unique_ptr<AssetStore> open(StoreConfig c) {
        auto s = AssetStore::open(std::move(c));
        if (!s) ADD_FAILURE() << s.error().message;
        return s ? std::move(*s) : nullptr;
    }
    std::string source(const std::string& name, const Bytes& b) {
        std::string p = root_ + "/src/" + name;
        write_all(p, b);
        return p;
    }
    // Reads extent by extent through the asset's descriptors and compares with the source.
    static void expect_reassembles(const Asset& a, const Bytes& src) {
        ASSERT_EQ(a.bytes(), src.size());
        Bytes got;
        for (uint64_t i = 0; i < a.extent_count(); ++i) {
            auto loc = a.extent_location(i);
            ASSERT_TRUE(loc);
            EXPECT_EQ(loc->disk, i % a.disk_count());
            EXPECT_EQ(loc->offset, (i / a.disk_count()) * a.extent_size());
            EXPECT_EQ(loc->length % 188, 0u);
            if (i + 1 < a.extent_count()) {
                EXPECT_EQ(loc->length, a.extent_size());
            }
            EXPECT_EQ(loc->fd, a.stripe_fd(loc->disk));
            Bytes buf(loc->length);
            ASSERT_EQ(pread(loc->fd, buf.data(), buf.size(), off_t(loc->offset)), ssize_t(buf.size()));
            got.insert(got.end(), buf.begin(), buf.end());
        }
        EXPECT_FALSE(a.extent_location(a.extent_count()));
        EXPECT_TRUE(got == src) << "reassembled extents differ from the source";
    }

    std::string root_;
};

TEST(StoreNames, Validation) {
    for (const char* ok : {"a", "movie_01.ts", "A-b.c", "x.idx", "a..b", "9"})
        EXPECT_TRUE(validate_asset_name(ok).ok()) << ok;
    EXPECT_TRUE(validate_asset_name(std::string(64, 'n')).ok());
    for (std::string bad : {std::string(""), std::string(".hidden"), std::string(".."), std::string("a/b"),
                            std::string("a b"), std::string(65, 'n'), std::string("caf\xc3\xa9"),
                            std::string("a\0b", 3), std::string("x*"), std::string("../etc")}) {
        auto s = validate_asset_name(bad);
        EXPECT_FALSE(s.ok()) << bad;
        if (!s.ok()) {
            EXPECT_EQ(s.error().code, EINVAL);
        }
    }
}

TEST(StoreNames, ExtentSizes) {
    EXPECT_EQ(kDefaultExtentSize, 1316u * 128);
    EXPECT_TRUE(validate_extent_size(kDefaultExtentSize).ok());
    EXPECT_TRUE(validate_extent_size(1316).ok());
    EXPECT_TRUE(validate_extent_size(kMaxExtentSize).ok());
    for (uint64_t bad : {uint64_t(0), uint64_t(188), uint64_t(1316 * 3 + 188), kMaxExtentSize + 1316})
        EXPECT_FALSE(validate_extent_size(bad).ok()) << bad;
}

TEST_F(StoreTest, OpenRefusesBadConfiguration) {
    auto code = [](StoreConfig c) {
        auto s = AssetStore::open(std::move(c));
        return s ? 0 : s.error().code;
    };
    EXPECT_EQ(code(config({})), EINVAL);
    EXPECT_EQ(code(config({"d0"}, 188 * 100)), EINVAL);
    auto c = config();
    c.catalog_dir = root_ + "/nope";
    EXPECT_EQ(code(c), ENOENT);
    write_all(root_ + "/file", {1});
    c = config();
    c.catalog_dir = root_ + "/file";
    EXPECT_EQ(code(c), ENOTDIR);
    EXPECT_EQ(code(config({"d0", "d1", "d0"})), EINVAL);
    fs::create_directory_symlink(root_ + "/d1", root_ + "/alias");
    EXPECT_EQ(code(config({"d1", "alias"})), EINVAL);  // the same directory under two names
    auto s = open(config({"d0", "./d1/../d1"}));
    ASSERT_TRUE(s);
    EXPECT_EQ(s->config().disks[1], fs::canonical(root_ + "/d1").string());
    EXPECT_TRUE(s->problems().empty());
}

TEST_F(StoreTest, IngestStripesRoundRobinAndReassemblesByteExact) {
    // 7 full extents and a short eighth one (5 packets).
    uint64_t packets = 7 * kEs / 188 + 5;
    Bytes ts = make_ts({.packets = packets});
    auto store = open(config());
    uint64_t calls = 0, last_copied = 0;
    IngestOptions opt{.progress = [&](uint64_t copied, uint64_t total) {
        ++calls;
        EXPECT_GT(copied, last_copied);
        EXPECT_EQ(total, ts.size());
        last_copied = copied;
        return true;
    }};
    auto info = store->ingest(source("a.ts", ts), "movie", opt);
    ASSERT_TRUE(info.ok()) << info.error().message;
    EXPECT_EQ(calls, 8u);
    EXPECT_EQ(last_copied, ts.size());
    EXPECT_EQ(info->name, "movie");
    EXPECT_EQ(info->bytes, ts.size());
    EXPECT_EQ(info->packets, packets);
    EXPECT_EQ(info->extents, 8u);
    EXPECT_EQ(info->extent_size, kEs);
    EXPECT_EQ(info->disks, 3u);
    EXPECT_EQ(info->pcr_pid, 0x100);
    EXPECT_EQ(info->bitrate_bps, 3'760'000u);
    EXPECT_EQ(info->duration_ns, int64_t(packets) * 400'000);
    EXPECT_EQ(info->rap_count, (packets - 3 + 299) / 300);

    // Disk 0 holds extents 0, 3, 6; disk 1 holds 1, 4, 7 (the short one); disk 2 holds 2, 5.
    uint64_t last_len = 5 * 188;
    EXPECT_EQ(fs::file_size(root_ + "/d0/movie.stripe"), 3 * kEs);
    EXPECT_EQ(fs::file_size(root_ + "/d1/movie.stripe"), 2 * kEs + last_len);
    EXPECT_EQ(fs::file_size(root_ + "/d2/movie.stripe"), 2 * kEs);
    EXPECT_TRUE(fs::exists(root_ + "/catalog/movie.idx"));

    auto a = store->find("movie");
    ASSERT_TRUE(a);
    EXPECT_EQ(a->stripe_path(1), fs::canonical(root_ + "/d1").string() + "/movie.stripe");
    expect_reassembles(*a, ts);
    // Independently of the descriptors: extent 7 is the tail of disk 1's stripe file.
    Bytes d1 = read_all(root_ + "/d1/movie.stripe");
    EXPECT_TRUE(std::equal(d1.begin() + 2 * kEs, d1.end(), ts.begin() + 7 * kEs));
    EXPECT_EQ(a->extent_location(7)->length, last_len);
    // Packet n lives in extent n*188 / extent_size.
    EXPECT_EQ(a->extent_of_packet(kEs / 188 - 1), 0u);
    EXPECT_EQ(a->extent_of_packet(kEs / 188), 1u);
    EXPECT_EQ(a->offset_in_extent(kEs / 188 + 2), 2 * 188u);
    // The index is the one the indexer computes from the source.
    auto direct = of::mpegts::index_buffer(ts);
    ASSERT_TRUE(direct.ok());
    EXPECT_EQ(a->index(), *direct);
}

TEST_F(StoreTest, FewerExtentsThanDisksAndOneDisk) {
    Bytes small = make_ts({.packets = 100});  // 18800 bytes: 4 extents over 5 disks
    fs::create_directory(root_ + "/d3");
    fs::create_directory(root_ + "/d4");
    auto store = open(config({"d0", "d1", "d2", "d3", "d4"}));
    auto info = store->ingest(source("s.ts", small), "small");
    ASSERT_TRUE(info.ok()) << info.error().message;
    EXPECT_EQ(info->extents, 4u);
    EXPECT_EQ(fs::file_size(root_ + "/d4/small.stripe"), 0u);
    expect_reassembles(*store->find("small"), small);

    auto one = open(config({"d0"}, 1316));
    Bytes ts = make_ts({.packets = 777});
    ASSERT_TRUE(one->ingest(source("o.ts", ts), "one").ok());
    EXPECT_EQ(fs::file_size(root_ + "/d0/one.stripe"), ts.size());
    expect_reassembles(*one->find("one"), ts);
}

TEST_F(StoreTest, ReopenLoadsEveryAsset) {
    Bytes a = make_ts({.packets = 3000});
    Bytes b = make_ts({.packets = 2000, .bitrate = 3'750'000, .rap_every = 0});
    {
        auto store = open(config());
        ASSERT_TRUE(store->ingest(source("b.ts", b), "zeta").ok());
        ASSERT_TRUE(store->ingest(source("a.ts", a), "alpha").ok());
    }
    auto store = open(config());
    EXPECT_TRUE(store->problems().empty());
    auto list = store->list();
    ASSERT_EQ(list.size(), 2u);
    EXPECT_EQ(list[0].name, "alpha");
    EXPECT_EQ(list[1].name, "zeta");
    EXPECT_EQ(list[1].rap_count, 0u);
    expect_reassembles(*store->find("alpha"), a);
    expect_reassembles(*store->find("zeta"), b);
    EXPECT_EQ(store->find("zeta")->index(), *of::mpegts::index_buffer(b));
    EXPECT_EQ(store->find("nope"), nullptr);
    // The content digest was taken at ingest and kept in the record.
    EXPECT_EQ(list[0].sha256, sha256_hex(a));
    EXPECT_EQ(list[1].sha256, sha256_hex(b));
    EXPECT_NE(list[0].sha256, list[1].sha256);
}

TEST_F(StoreTest, DiskOrderComesFromTheRecord) {
    Bytes ts = make_ts({.packets = 2000});
    {
        auto store = open(config({"d0", "d1"}));
        ASSERT_TRUE(store->ingest(source("a.ts", ts), "m").ok());
    }
    // Reordered and grown configuration: the asset keeps its own layout; new assets use all disks.
    auto store = open(config({"d2", "d1", "d0"}));
    EXPECT_TRUE(store->problems().empty());
    auto a = store->find("m");
    ASSERT_TRUE(a);
    EXPECT_EQ(a->disk_count(), 2u);
    EXPECT_EQ(a->disk_path(0), fs::canonical(root_ + "/d0").string());
    expect_reassembles(*a, ts);
    // Without one of its disks the asset cannot be read: reported, skipped.
    auto without = open(config({"d0", "d2"}));
    EXPECT_EQ(without->find("m"), nullptr);
    ASSERT_EQ(without->problems().size(), 1u);
    EXPECT_EQ(without->problems()[0].error.code, ENOENT);
    EXPECT_NE(without->problems()[0].error.message.find("not a configured disk"), std::string::npos);
}

TEST_F(StoreTest, FailedIngestLeavesNothing) {
    auto store = open(config());
    Bytes good = make_ts({.packets = 4000});
    ASSERT_TRUE(store->ingest(source("good.ts", good), "good").ok());
    const auto before = snapshot(root_);

    struct Case {
        std::string what;
        std::string path;
        std::string name;
        int code;
        std::optional<IndexError> kind;
    };
    Bytes sync_lost = make_ts({.packets = 4000});
    sync_lost[3500 * 188] = 0;  // after several extents were written
    Bytes trunc_big = make_ts({.packets = 4000});
    trunc_big.resize(trunc_big.size() - 1);
    Bytes trunc_small = make_ts({.packets = 20});
    trunc_small.resize(trunc_small.size() - 100);
    Bytes no_pcr = make_ts({.packets = 4000, .pcr_first = 1u << 30});
    Bytes text(30000, 'x');
    std::vector<Case> cases = {
        {"sync lost late", source("c1", sync_lost), "x", EILSEQ, IndexError::kSyncLost},
        {"truncated, large", source("c2", trunc_big), "x", EBADMSG, IndexError::kTruncated},
        {"truncated, small", source("c3", trunc_small), "x", EBADMSG, IndexError::kTruncated},
        {"no PCR", source("c4", no_pcr), "x", ENOMSG, IndexError::kNoPcr},
        {"not TS", source("c5", text), "x", EMEDIUMTYPE, IndexError::kNotTransportStream},
        {"empty", source("c6", {}), "x", ENODATA, IndexError::kEmpty},
        {"missing source", root_ + "/src/none", "x", ENOENT, std::nullopt},
        {"directory source", root_ + "/src", "x", EINVAL, std::nullopt},
        {"bad name", source("c7", good), "../x", EINVAL, std::nullopt},
        {"existing name", source("c8", good), "good", EEXIST, std::nullopt},
    };
    for (const auto& c : cases) {
        auto r = store->ingest(c.path, c.name);
        ASSERT_FALSE(r.ok()) << c.what;
        EXPECT_EQ(r.error().code, c.code) << c.what << ": " << r.error().message;
        EXPECT_EQ(of::mpegts::index_error_of(r.error()), c.kind) << c.what << ": " << r.error().message;
        auto after = snapshot(root_);
        for (auto& [p, sz] : after) {
            if (p.find("/src/") == std::string::npos) {
                EXPECT_TRUE(before.count(p)) << c.what << " left " << p;
            }
        }
        EXPECT_EQ(store->list().size(), 1u) << c.what;
    }

    // Cancelled from the progress callback half way.
    auto r = store->ingest(source("c9", good), "x", {.progress = [](uint64_t copied, uint64_t total) {
                               return copied < total / 2;
                           }});
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, ECANCELED);
    // Larger than the configured limit: refused before copying.
    auto small_limit = config();
    small_limit.limits.max_bytes = good.size() - 188;
    auto limited = open(small_limit);
    r = limited->ingest(root_ + "/src/c9", "y");
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(of::mpegts::index_error_of(r.error()), IndexError::kTooLarge) << r.error().message;

    for (auto& [p, sz] : snapshot(root_)) {
        if (p.find("/src/") == std::string::npos) {
            EXPECT_TRUE(before.count(p)) << "left " << p;
        }
    }
    // And the name is free again.
    EXPECT_TRUE(store->ingest(root_ + "/src/c9", "x").ok());
}

TEST_F(StoreTest, WriteFailureMidCopyLeavesNothing) {
    // A real I/O error part way through: the file size limit makes the third extent's write fail
    // with EFBIG. Done in a child so the limit does not touch the test process.
    Bytes ts = make_ts({.packets = 4000});
    std::string src = source("big.ts", ts);
    const auto before = snapshot(root_);
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        signal(SIGXFSZ, SIG_IGN);
        auto store = AssetStore::open(config({"d0"}));
        if (!store) _exit(10);
        rlimit rl{kEs * 2, kEs * 2};
        if (setrlimit(RLIMIT_FSIZE, &rl) != 0) _exit(11);
        auto r = (*store)->ingest(src, "big");
        if (r.ok()) _exit(12);
        if (r.error().code != EFBIG || of::mpegts::index_error_of(r.error())) _exit(13);
        if (!(*store)->list().empty()) _exit(14);
        _exit(0);
    }
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 0);
    EXPECT_EQ(snapshot(root_), before);
}

TEST_F(StoreTest, CorruptRecordsAreReportedAndSkipped) {
    Bytes ts = make_ts({.packets = 2000});
    {
        auto store = open(config());
        for (const char* n : {"good", "garbage", "flipped", "short", "stripeless", "stripe_short"})
            ASSERT_TRUE(store->ingest(source(n, ts), n).ok()) << n;
    }
    std::string cat = root_ + "/catalog/";
    write_all(cat + "garbage.idx", Bytes(500, 0x5a));
    Bytes rec = read_all(cat + "flipped.idx");
    rec[rec.size() / 2] ^= 0x10;
    write_all(cat + "flipped.idx", rec);
    rec = read_all(cat + "short.idx");
    rec.resize(rec.size() - 9);
    write_all(cat + "short.idx", rec);
    fs::remove(root_ + "/d2/stripeless.stripe");
    fs::resize_file(root_ + "/d1/stripe_short.stripe", fs::file_size(root_ + "/d1/stripe_short.stripe") - 188);
    fs::copy_file(cat + "good.idx", cat + "alias.idx");
    write_all(cat + "bad name.idx", Bytes(10, 0));

    auto store = open(config());
    ASSERT_TRUE(store);
    auto list = store->list();
    ASSERT_EQ(list.size(), 1u);
    EXPECT_EQ(list[0].name, "good");
    expect_reassembles(*store->find("good"), ts);
    std::map<std::string, int> problems;
    for (const auto& p : store->problems()) problems[fs::path(p.path).filename().string()] = p.error.code;
    std::map<std::string, int> expected = {
        {"garbage.idx", EUCLEAN}, {"flipped.idx", EUCLEAN}, {"short.idx", EUCLEAN},
        {"alias.idx", EUCLEAN},   {"stripeless.idx", ENOENT}, {"stripe_short.idx", EIO},
        {"bad name.idx", EINVAL},
    };
    EXPECT_EQ(problems, expected);
    for (const auto& p : store->problems()) EXPECT_FALSE(p.error.message.empty()) << p.path;

    // A failed name cannot be ingested over, but can be removed, and then ingested again.
    auto again = store->ingest(source("g2", ts), "garbage");
    ASSERT_FALSE(again.ok());
    EXPECT_EQ(again.error().code, EEXIST);
    EXPECT_TRUE(store->remove("garbage").ok());
    EXPECT_FALSE(fs::exists(cat + "garbage.idx"));
    EXPECT_FALSE(fs::exists(root_ + "/d0/garbage.stripe"));
    EXPECT_TRUE(store->ingest(source("g2", ts), "garbage").ok());
    EXPECT_EQ(store->remove("never").error().code, ENOENT);
}

TEST_F(StoreTest, RemoveKeepsHeldAssetsReadable) {
    Bytes ts = make_ts({.packets = 3000});
    auto store = open(config());
    ASSERT_TRUE(store->ingest(source("a.ts", ts), "m").ok());
    auto held = store->find("m");
    ASSERT_TRUE(held);
    ASSERT_TRUE(store->remove("m").ok());
    EXPECT_EQ(store->find("m"), nullptr);
    EXPECT_TRUE(store->list().empty());
    for (const char* p : {"/catalog/m.idx", "/d0/m.stripe", "/d1/m.stripe", "/d2/m.stripe"})
        EXPECT_FALSE(fs::exists(root_ + p)) << p;
    expect_reassembles(*held, ts);  // a streaming session that holds it finishes
    EXPECT_EQ(store->remove("m").error().code, ENOENT);
    EXPECT_TRUE(store->ingest(source("a.ts", ts), "m").ok());
    EXPECT_TRUE(open(config())->find("m"));
}

TEST_F(StoreTest, LeftoversAreCleanedAndOrphansReported) {
    // A dead process's temporaries go; a live one's stay; stripes without a record are reported.
    pid_t dead = fork();
    ASSERT_GE(dead, 0);
    if (dead == 0) _exit(0);
    ASSERT_EQ(waitpid(dead, nullptr, 0), dead);
    std::string d = std::to_string(dead);
    write_all(root_ + "/d1/.x.stripe.ingest-" + d + "-0", {1, 2});
    write_all(root_ + "/catalog/.x.idx.ingest-" + d + "-3", {1});
    write_all(root_ + "/d0/.y.stripe.ingest-1-0", {1});  // pid 1 is alive
    write_all(root_ + "/d0/.notours", {1});
    write_all(root_ + "/d2/orphan.stripe", {1});
    auto store = open(config());
    EXPECT_FALSE(fs::exists(root_ + "/d1/.x.stripe.ingest-" + d + "-0"));
    EXPECT_FALSE(fs::exists(root_ + "/catalog/.x.idx.ingest-" + d + "-3"));
    EXPECT_TRUE(fs::exists(root_ + "/d0/.y.stripe.ingest-1-0"));
    EXPECT_TRUE(fs::exists(root_ + "/d0/.notours"));
    std::map<std::string, int> problems;
    for (const auto& p : store->problems()) problems[fs::path(p.path).filename().string()] = p.error.code;
    std::map<std::string, int> expected = {
        {".x.stripe.ingest-" + d + "-0", ESTALE},
        {".x.idx.ingest-" + d + "-3", ESTALE},
        {"orphan.stripe", ENOENT},
    };
    EXPECT_EQ(problems, expected);
    EXPECT_TRUE(store->remove("orphan").ok());  // clears the orphan
    EXPECT_FALSE(fs::exists(root_ + "/d2/orphan.stripe"));
}

TEST_F(StoreTest, ConcurrentIngestOfOneNameIsRefused) {
    Bytes ts = make_ts({.packets = 4000});
    std::string src = source("a.ts", ts);
    auto store = open(config());
    std::mutex mu;
    std::condition_variable cv;
    bool started = false, go = false;
    of::Result<AssetInfo> first = of::make_error(EINVAL, "not run");
    std::thread t([&] {
        first = store->ingest(src, "m", {.progress = [&](uint64_t, uint64_t) {
                                    std::unique_lock lk(mu);
                                    started = true;
                                    cv.notify_all();
                                    cv.wait_for(lk, std::chrono::seconds(30), [&] { return go; });
                                    return true;
                                }});
    });
    {
        std::unique_lock lk(mu);
        ASSERT_TRUE(cv.wait_for(lk, std::chrono::seconds(30), [&] { return started; }));
    }
    auto second = store->ingest(src, "m");
    auto removed = store->remove("m");
    auto found = store->find("m");
    {
        std::lock_guard lk(mu);
        go = true;
        cv.notify_all();
    }
    t.join();
    ASSERT_FALSE(second.ok());
    EXPECT_EQ(second.error().code, EBUSY);
    EXPECT_EQ(removed.error().code, EBUSY);
    EXPECT_EQ(found, nullptr);
    ASSERT_TRUE(first.ok()) << first.error().message;
    expect_reassembles(*store->find("m"), ts);
}

TEST(StoreRecord, RoundTripAndCorruption) {
    auto index = of::mpegts::index_buffer(make_ts({.packets = 500}));
    ASSERT_TRUE(index.ok());
    AssetRecord r{"name", kEs, {"/srv/d0", "/srv/d1"}, *index, std::string(64, 'a')};
    auto bytes = encode_record(r);
    auto back = decode_record(bytes);
    ASSERT_TRUE(back.ok()) << back.error().message;
    EXPECT_EQ(back->name, "name");
    EXPECT_EQ(back->sha256, r.sha256);
    r.sha256 = "A" + std::string(63, 'a');  // not lowercase hex
    EXPECT_EQ(decode_record(encode_record(r)).error().code, EUCLEAN);
    r.sha256 = std::string(64, 'a');
    EXPECT_EQ(back->extent_size, kEs);
    EXPECT_EQ(back->disks, r.disks);
    EXPECT_EQ(back->index, *index);
    for (size_t len = 0; len < bytes.size(); ++len) ASSERT_FALSE(decode_record(std::span(bytes).first(len)).ok());
    for (size_t i = 0; i < bytes.size(); ++i) {
        auto bad = bytes;
        bad[i] ^= 0x01;
        auto d = decode_record(bad);
        ASSERT_FALSE(d.ok()) << i;
        EXPECT_EQ(d.error().code, EUCLEAN);
    }
}

TEST(StoreRecord, Version1RecordsLoadWithoutADigest) {
    auto index = of::mpegts::index_buffer(make_ts({.packets = 500}));
    ASSERT_TRUE(index.ok());
    AssetRecord r{"old", kEs, {"/srv/d0"}, *index, ""};
    auto v2 = encode_record(r);
    // Version 1 had no digest field: drop its empty str16, set the version, fix length and CRC.
    const size_t at = 24 + (2 + 3) + 8 + 8 + 4 + (2 + 7);  // header, name, bytes, extent size, disks
    ASSERT_EQ(v2[at], 0);
    ASSERT_EQ(v2[at + 1], 0);
    std::vector<uint8_t> v1(v2.begin(), v2.begin() + at);
    v1.insert(v1.end(), v2.begin() + at + 2, v2.end() - 4);
    v1[8] = 1;
    uint64_t body = v1.size() - 24;
    for (int i = 0; i < 8; ++i) v1[16 + i] = uint8_t(body >> (8 * i));
    uint32_t crc = of::mpegts::crc32_file(v1);
    for (int i = 0; i < 4; ++i) v1.push_back(uint8_t(crc >> (8 * i)));
    auto back = decode_record(v1);
    ASSERT_TRUE(back.ok()) << back.error().message;
    EXPECT_EQ(back->name, "old");
    EXPECT_TRUE(back->sha256.empty());
    EXPECT_EQ(back->index, *index);
    v1[8] = 3;  // a version from the future
    EXPECT_EQ(decode_record(v1).error().code, EUCLEAN);
}

TEST_F(StoreTest, RealAssetIngestThroughput) {
    if (system("command -v ffmpeg >/dev/null 2>&1") != 0) GTEST_SKIP() << "ffmpeg is not installed (apt-get install ffmpeg)";
    std::string path = root_ + "/src/real.ts";
    std::string cmd = std::string(OF_SOURCE_DIR) + "/tools/mkasset " + path + " --seconds 20 --quiet";
    ASSERT_EQ(system(cmd.c_str()), 0) << cmd;
    Bytes ts = read_all(path);
    auto store = open(config({"d0", "d1", "d2"}, kDefaultExtentSize));
    auto t0 = std::chrono::steady_clock::now();
    auto info = store->ingest(path, "real");
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ASSERT_TRUE(info.ok()) << info.error().message;
    std::printf("[ measure  ] ingest of a 20 s 3.75 Mb/s asset (%zu bytes, %llu extents, 3 disks, with fsync): "
                "%.3f s = %.0f MB/s\n",
                ts.size(), (unsigned long long)info->extents, secs, ts.size() / secs / 1e6);
    EXPECT_NEAR(double(info->duration_ns), 20e9, 0.1e9);
    EXPECT_NEAR(double(info->bitrate_bps), 3'750'000.0, 3'750.0);
    EXPECT_GT(info->rap_count, 40u);
    expect_reassembles(*store->find("real"), ts);
}

}  // namespace
