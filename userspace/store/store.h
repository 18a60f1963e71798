// The asset store: ingested MPEG-TS assets laid out as fixed-size extents striped round-robin over
// the server's disk directories (seed 002 Fig. 3A). Extent i of asset NAME lives on disk i % N at
// offset (i / N) * extent_size of DISK/NAME.stripe; CATALOG/NAME.idx holds the asset's record and
// index. Thread-safe: ingest and remove run on the control thread while streaming threads hold
// assets through shared pointers (a removed asset stays readable until its last holder lets go).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "mpegts/index.h"
#include "mpegts/indexer.h"
#include "store/record.h"

namespace of::store {

struct StoreConfig {
    std::string catalog_dir;          // where NAME.idx files live
    std::vector<std::string> disks;   // disk directories; new assets are striped over all of them
    uint64_t extent_size = kDefaultExtentSize;
    mpegts::IndexLimits limits;       // max_bytes is the largest asset ingest accepts
};

struct AssetInfo {
    std::string name;
    uint64_t bytes = 0;
    uint64_t packets = 0;
    int64_t duration_ns = 0;
    uint64_t bitrate_bps = 0;
    uint16_t pcr_pid = 0;
    uint64_t pcr_count = 0;
    uint64_t rap_count = 0;
    uint64_t extent_size = 0;
    uint64_t extents = 0;
    uint32_t disks = 0;
    std::string sha256;  // the source's content digest (hex); empty if ingested before it was kept
};

struct ExtentLocation {
    uint32_t disk = 0;    // index into the asset's disk list
    int fd = -1;          // O_RDONLY descriptor of that disk's stripe file, owned by the Asset
    uint64_t offset = 0;  // byte offset in the stripe file
    uint64_t length = 0;  // extent_size, or less for the last extent (always a multiple of 188)
};

class Asset {
public:
    Asset(const Asset&) = delete;
    Asset& operator=(const Asset&) = delete;
    ~Asset();

    const std::string& name() const { return record_.name; }
    const mpegts::Index& index() const { return record_.index; }
    uint64_t bytes() const { return record_.index.bytes(); }
    uint64_t extent_size() const { return record_.extent_size; }
    uint64_t extent_count() const;
    uint32_t disk_count() const { return uint32_t(record_.disks.size()); }
    const std::string& disk_path(uint32_t d) const { return record_.disks.at(d); }
    const std::string& stripe_path(uint32_t d) const { return stripes_.at(d); }
    int stripe_fd(uint32_t d) const { return fds_.at(d); }

    // Where extent i is; nullopt if i >= extent_count().
    std::optional<ExtentLocation> extent_location(uint64_t i) const;
    // The extent holding packet n and the packet's byte offset within it.
    uint64_t extent_of_packet(uint64_t n) const { return n * mpegts::kPacketSize / extent_size(); }
    uint64_t offset_in_extent(uint64_t n) const { return n * mpegts::kPacketSize % extent_size(); }
    // Size disk d's stripe file must have.
    uint64_t stripe_bytes(uint32_t d) const;

    AssetInfo info() const;

private:
    friend class AssetStore;
    explicit Asset(AssetRecord r);

    AssetRecord record_;
    std::vector<std::string> stripes_;
    std::vector<int> fds_;
};

// Something open() found and skipped (a corrupt record, a stripe file of the wrong size, leftovers
// of an interrupted ingest it removed). None of them stops the store from opening.
struct Problem {
    std::string path;
    Error error;
};

struct IngestOptions {
    // Called after each extent is written with bytes copied so far and the source size; returning
    // false cancels the ingest (ECANCELED).
    std::function<bool(uint64_t copied, uint64_t total)> progress;
};

class AssetStore {
public:
    // Checks the configuration, loads every CATALOG/NAME.idx and opens its stripe files.
    static Result<std::unique_ptr<AssetStore>> open(StoreConfig config);

    const std::vector<Problem>& problems() const { return problems_; }
    const StoreConfig& config() const { return config_; }  // disk paths canonical

    // Validates and indexes source_path while copying it into extents; the asset appears only
    // when everything is written and synced, and a failure leaves no file behind. Refusals of the
    // content carry an of::mpegts::IndexError (see index_error_of); an existing name is EEXIST.
    Result<AssetInfo> ingest(const std::string& source_path, const std::string& name,
                             const IngestOptions& options = {});
    // Removes the record, then the stripe files. Holders of the asset keep reading it. A name
    // whose record failed to load (see problems()) is removed too: its record and stripe files
    // on the configured disks are deleted.
    Status remove(const std::string& name);
    std::vector<AssetInfo> list() const;  // sorted by name
    std::shared_ptr<const Asset> find(std::string_view name) const;

    ~AssetStore() = default;

private:
    explicit AssetStore(StoreConfig config) : config_(std::move(config)) {}
    void load_catalog();
    Result<std::shared_ptr<Asset>> load_record(const std::string& path, const std::string& name);
    void clean_leftovers(const std::string& dir);
    Status remove_unloaded(const std::string& name);
    Result<AssetInfo> ingest_locked_name(const std::string& source_path, const std::string& name,
                                         const IngestOptions& options);

    StoreConfig config_;
    std::vector<Problem> problems_;
    mutable std::mutex mu_;
    std::map<std::string, std::shared_ptr<const Asset>, std::less<>> assets_;
    std::set<std::string, std::less<>> pending_;  // names being ingested
};

}  // namespace of::store
