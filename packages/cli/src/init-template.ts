/** The kiln.yaml `kiln init` writes: a working spec with every section, commented. */
export function initSpec(service: string): string {
  return `# Kiln service spec. Reference: docs/reference/kiln-yaml.md (JSON Schema: @kilnjs/core/schema.json)
service: ${service}
provider: docker

image:
  dockerfile:
    context: .            # the build context, relative to this file
    file: Dockerfile      # relative to the context
    args: {}              # build arguments; part of the fingerprint, so no secrets

instances:
  count: 2
  ports:
    - { name: http, port: 8080 }
  env:
    LOG_LEVEL: info       # recorded in each release: no secrets here
  stopGracePeriodMs: 10000

health:
  http: { port: http, path: /healthz }
  intervalMs: 1000
  healthyThreshold: 2
  startPeriodMs: 5000

rollout:
  strategy: rolling
  maxSurge: 1             # start one new instance before retiring an old one
  maxUnavailable: 0       # never drop below \`count\` healthy instances

environments:
  staging:
    instances: { count: 1 }
`;
}

/**
 * A starter .dockerignore: keeps VCS data, dependencies, Kiln's state and files that look like
 * secrets out of the image, at any depth (`**\/`), so that a `.env` or a key in a subfolder is kept
 * out as well as one at the root. Mirrors the context guard's rules (core's `secret-files.ts`):
 * what it lists, the guard would otherwise refuse. `.env.example` and the like stay in.
 */
export const INIT_DOCKERIGNORE = `# Version control, dependencies, logs, Kiln's own state
.git
**/.git
.kiln
node_modules
**/*.log

# Secrets, at any depth: Kiln refuses to build them into an image (docs/secrets.md)
**/.env
**/.env.*
!**/.env.example
!**/.env.sample
!**/.env.template
!**/.env.dist
**/.envrc
**/*.pem
**/*.key
**/*.p12
**/*.pfx
**/id_rsa*
**/id_dsa*
**/id_ecdsa*
**/id_ed25519*
**/.aws
**/.azure
**/.config/gcloud
**/.docker/config.json
**/.kube
**/.npmrc
**/.netrc
**/.git-credentials
**/.pgpass
`;
