# Sourced by project scripts: puts the Node 24 that scripts/setup provisioned first on PATH.
# (The system's Node may be older; Rebound targets Node 24 LTS.)
REBOUND_HOME="${REBOUND_HOME:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
if [ -x "$REBOUND_HOME/.tools/node/bin/node" ]; then
  PATH="$REBOUND_HOME/.tools/node/bin:$PATH"
fi
PATH="$REBOUND_HOME/node_modules/.bin:$PATH"
export PATH REBOUND_HOME
# npm 11 warns on every npm/npx call about a `nodedir` key in the user's ~/.npmrc (an old way to
# point node-gyp at headers; scripts/setup passes the provisioned Node's headers itself). The
# project's .npmrc sets `userconfig=.tools/npmrc`, so npm run in this project, sourced here or
# not, reads this copy of the user config without that key; everything else in it (registry,
# lockfile settings) still applies.
mkdir -p "$REBOUND_HOME/.tools"
if [ -f "$HOME/.npmrc" ]; then
  grep -v '^[[:space:]]*nodedir[[:space:]]*=' "$HOME/.npmrc" > "$REBOUND_HOME/.tools/npmrc" || true
else
  rm -f "$REBOUND_HOME/.tools/npmrc"
fi
