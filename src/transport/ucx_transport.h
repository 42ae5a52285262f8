// src/transport: moving bytes between hosts over UCX (issue 12; docs/cluster.md).
//
// A Transport listens on a TCP address and serves reads of this host's memory
// to peers, and pulls bytes from peers into memory the caller owns. This
// first data path is the one issue 12 names for TCP, where UCX 1.13 has no
// native get: a pull sends a request active message naming (region, offset,
// length) and the holder answers with one active message carrying the bytes,
// sent with the rendezvous protocol so that they land in the puller's buffer
// without an intermediate copy on the puller's side.
//
// Every request carries the cluster token; a holder answers a wrong one with
// PERMISSION_DENIED and sends nothing. What a region id means is the
// holder's business (Resolver): the daemon maps it to an object it leased
// for the puller when the puller opened it over the control channel
// (src/cluster/peer_channel.h), which also hands out the remote keys of
// one-sided reads.
//
// Threading: one progress thread owns the UCX worker; Pull may be called from
// any thread and blocks until its bytes are in place or it has failed. When
// Pull returns, with any status, UCX will not write to `dest` again: a pull
// that times out closes its endpoint and waits for UCX to give the buffer
// back.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace cistern::transport {

// Bytes a peer may read, kept in place until `release` is called (after the
// send completed or failed).
struct ReadLease {
  const void* data = nullptr;
  std::function<void()> release;  // may be empty
};

// Resolves a peer's read of `length` bytes at `offset` of `region`: a lease
// on them, or an error sent back to the puller (NotFound, OutOfRange, ...).
using Resolver =
    std::function<absl::StatusOr<ReadLease>(uint64_t region, uint64_t offset, uint64_t length)>;

struct TransportOptions {
  std::string listen_address = "127.0.0.1";  // numeric IPv4
  uint16_t port = 0;                         // 0: a free port (see Transport::port)
  std::string token;                         // required of every peer's request
  // Enables one-sided reads (UCP_FEATURE_RMA): RegisterMemory and Get. Off,
  // they are FailedPrecondition. Off by default: with RMA, UCX 1.13 wires up
  // extra lanes, and a peer that dies before they are connected tripped
  // UCX's own assertion in wireup_ep.c (the daemon aborted), seen twice on TCP.
  bool one_sided = false;
  // The network devices UCX may use (UCX_NET_DEVICES syntax: "eth0",
  // "lo,mlx5_0:1"); empty: every device UCX finds. An UCX_NET_DEVICES in the
  // environment wins over it. UCX 1.13 opens a TCP interface on every device
  // at start and may spread a connection's lanes over them; when such a
  // device goes away (a container's veth, a bridge) while a connection is
  // being wired up, UCX aborts the process in its own assertion
  // (wireup_ep.c). A daemon therefore keeps to the devices it needs
  // (NetDevicesFor).
  std::string net_devices;
};

// The devices a transport listening on `listen_address` (numeric IPv4)
// needs: the interface that holds that address (the loopback interface for
// 127.0.0.0/8) and every RDMA port under `infiniband_sysfs` ("mlx5_0:1").
// Empty, meaning every device, for 0.0.0.0 or an address no interface holds.
std::string NetDevicesFor(const std::string& listen_address,
                          const std::string& infiniband_sysfs = "/sys/class/infiniband");

class Transport {
 public:
  static absl::StatusOr<std::unique_ptr<Transport>> Start(const TransportOptions& options,
                                                          Resolver resolver);
  ~Transport();  // stops the progress thread; pulls in flight fail with Unavailable

  uint16_t port() const;

  // Reads `length` bytes at (`region`, `offset`) of the peer listening at
  // `address` ("a.b.c.d:port") into `dest`. Unavailable when the peer cannot
  // be reached or goes away mid-pull, DeadlineExceeded after `timeout`, or
  // the holder's own error (PermissionDenied for a wrong token, NotFound,
  // ...). The endpoint to a peer is made on first use and kept.
  absl::Status Pull(const std::string& address, uint64_t region, uint64_t offset, uint64_t length,
                    void* dest, std::chrono::milliseconds timeout);

  // The one-sided variant (ucp_get_nbx): reads `length` bytes at `remote`
  // in memory the peer at `address` registered (RegisterMemory), described by
  // its packed remote key `rkey`, into `dest`. The peer's CPU is not asked,
  // so nothing checks that the bytes are still what the caller expects: the
  // caller verifies them (the fetcher's end-to-end checksum). Same errors and
  // the same promise about `dest` as Pull.
  absl::Status Get(const std::string& address, std::string_view rkey, uint64_t remote,
                   uint64_t length, void* dest, std::chrono::milliseconds timeout);

  // Registers [base, base + length) with UCX, once, for peers' Gets until
  // the transport stops; the packed remote key to hand to peers (over an
  // authenticated channel only).
  absl::StatusOr<std::string> RegisterMemory(void* base, size_t length);

  // What UCX says about the connection to `address` (ucp_ep_print_info: its
  // lanes and their transports); NotFound before any call or pull to it.
  absl::StatusOr<std::string> PeerTransports(const std::string& address);
  // Whether such a description names an RDMA transport (where one-sided
  // reads are native; on TCP, UCX 1.13 emulates them over active messages).
  static bool LooksRdma(std::string_view description);

  class Impl;

 private:
  explicit Transport(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace cistern::transport
