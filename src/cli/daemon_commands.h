// `cistern daemon start|stop|restart|status|logs`: running cisternd in the
// background with per-session state under $CISTERN_HOME.
#pragma once

#include "CLI/CLI.hpp"
#include "src/cli/data_commands.h"

namespace cistern::cli {

void RegisterDaemonCommands(CLI::App* app, Target* target, const bool* json, int* rc);

}  // namespace cistern::cli
