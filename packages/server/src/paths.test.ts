import { describe, expect, it } from "vitest";
import { hidePaths } from "./paths.js";

describe("hidePaths", () => {
  const paths = hidePaths([{ dir: "/srv/specs" }, { dir: "/srv/specs/.kiln", as: "<data-dir>" }, { dir: "/srv/hello" }]);

  it("names a path inside a folder relative to it, the innermost folder winning", () => {
    expect(paths.text("The Dockerfile /srv/specs/app/Missing.Dockerfile does not exist.")).toBe("The Dockerfile app/Missing.Dockerfile does not exist.");
    expect(paths.text("Cannot write the state file /srv/specs/.kiln/state/web@prod.json: check free disk space")).toBe("Cannot write the state file <data-dir>/state/web@prod.json: check free disk space");
    expect(paths.text("/srv/hello/kiln.yaml:3:5: unknown key")).toBe("kiln.yaml:3:5: unknown key");
  });

  it("shows a folder itself as . (or its name), and leaves longer names that start with it alone", () => {
    expect(paths.text("the build context /srv/specs does not exist")).toBe("the build context . does not exist");
    expect(paths.text("data in /srv/specs/.kiln.")).toBe("data in <data-dir>.");
    expect(paths.text("/srv/specs2/x and /srv/specs.old/y and /srv/specs-b")).toBe("/srv/specs2/x and /srv/specs.old/y and /srv/specs-b");
    expect(paths.text("outside: /etc/passwd, /run/secrets/db")).toBe("outside: /etc/passwd, /run/secrets/db");
  });

  it("never hides the filesystem root, and rewrites every string of a JSON value", () => {
    expect(hidePaths([{ dir: "/" }]).text("/srv/specs/app")).toBe("/srv/specs/app");
    const event = { type: "rollout.failed", count: 2, error: { message: "at /srv/specs/app" }, files: ["/srv/hello/a", null] };
    expect(paths.value(event)).toEqual({ type: "rollout.failed", count: 2, error: { message: "at app" }, files: ["a", null] });
    expect(event.error.message).toBe("at /srv/specs/app");
  });
});
