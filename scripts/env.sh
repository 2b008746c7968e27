# Sourced by project scripts: puts the Node 24 that scripts/setup provisioned first on PATH.
# (The system's Node may be older; Rebound targets Node 24 LTS.)
REBOUND_HOME="${REBOUND_HOME:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
if [ -x "$REBOUND_HOME/.tools/node/bin/node" ]; then
  PATH="$REBOUND_HOME/.tools/node/bin:$PATH"
fi
PATH="$REBOUND_HOME/node_modules/.bin:$PATH"
export PATH REBOUND_HOME
