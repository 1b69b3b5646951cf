#!/bin/sh
# Runs once in the builder VM at bake time, as root, after the files are in place.
set -eu
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends nodejs
id hello-web >/dev/null 2>&1 || useradd --system --home /opt/hello-web --shell /usr/sbin/nologin hello-web
chown -R hello-web:hello-web /opt/hello-web
systemctl enable hello-web.service
