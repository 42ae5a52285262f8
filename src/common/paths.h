// Where Cistern's files live on a host: the one definition the daemon, the
// client library and the CLI share, so that a client finds the daemon that
// `cistern daemon start` started.
//
//   $CISTERN_HOME (default ~/.cistern)
//     hosts/<host_id>/current_session     the id of the live session
//     hosts/<host_id>/sessions/<id>/      one `cistern daemon start` each
//         meta.json                       pid, socket, ... (see daemon_commands.cc)
//     hosts/<host_id>/run/cisternd.sock   the CLI-started daemon's socket
//     hosts/<host_id>/state/              its durable state
//
// A cisternd started by hand with no runtime_dir uses DefaultRuntimeDir().
#pragma once

#include <string>
#include <string_view>

namespace cistern::paths {

// $CISTERN_HOME, else $HOME/.cistern (/tmp/.cistern without $HOME).
std::string HomeDir();

// The hostname plus the start of /etc/machine-id: one per host, even when
// several hosts share a home directory.
std::string HostId();

// HomeDir()/hosts/HostId().
std::string HostDir();

// A hand-started daemon's runtime_dir: $CISTERN_HOME/run, else
// /tmp/cistern-<euid>.
std::string DefaultRuntimeDir();

// True if `pid` is a live process whose argv[0] contains `binary` (not a
// zombie, not a recycled pid).
bool IsLiveProcess(int pid, std::string_view binary);

// IsLiveProcess(pid, "cisternd").
bool IsLiveDaemon(int pid);

// The socket of this host's live `cistern daemon start` session, or "" when
// there is none (no current session, or its process is gone).
std::string CurrentSessionSocket();

}  // namespace cistern::paths
