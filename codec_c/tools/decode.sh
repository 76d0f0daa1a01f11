#!/bin/sh
exec "$(dirname "$0")/encode" -d "$@"
