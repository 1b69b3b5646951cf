import path from "node:path";

/** A folder of the server's whose absolute path an API caller must not see, and how to show it instead. */
export interface HiddenFolder {
  /** The folder, absolute. */
  readonly dir: string;
  /**
   * What stands for it: paths inside it are shown as `<as>/<relative path>`, the folder itself as
   * `as`. @defaultValue "" (paths inside it are shown relative to it, the folder itself as `.`)
   */
  readonly as?: string;
}

/** Rewrites the server's own absolute paths in what an API caller sees. */
export interface PathHider {
  /** `text` with each hidden folder's absolute path replaced (see {@link hidePaths}). */
  text(text: string): string;
  /** A copy of a JSON value (a problem's details, an event) with {@link PathHider.text} applied to every string in it. */
  value<T>(value: T): T;
}

/**
 * Hides the server's own folders (its spec root, registered services' folders, its data folder)
 * in messages meant for API callers: a caller names files relative to the spec it sent, and the
 * layout of the server's disk is none of its business (nor a hint for an attacker). Core's
 * messages name absolute paths, which the CLI prints as they are (its user owns the disk); the
 * server rewrites them at its boundary: `/srv/specs/app/Dockerfile` becomes `app/Dockerfile` when
 * `/srv/specs` is the spec root, `/srv/kiln/state/web@prod.json` becomes
 * `<data-dir>/state/web@prod.json` when that is the data folder.
 *
 * The innermost folder wins when one lies inside another. The filesystem root is never hidden
 * (every absolute path would be rewritten). A path outside every folder is left as it is.
 *
 * @param folders - the folders to hide, in any order
 */
export function hidePaths(folders: readonly HiddenFolder[]): PathHider {
  const rules = folders
    .map((folder) => ({ dir: path.resolve(folder.dir), as: folder.as ?? "" }))
    .filter((folder) => folder.dir !== path.parse(folder.dir).root)
    // Innermost first: /srv/specs/.kiln before /srv/specs.
    .sort((a, b) => b.dir.length - a.dir.length)
    .map((folder) => {
      const escaped = folder.dir.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
      const sep = path.sep.replace(/\\/g, "\\\\");
      return {
        inside: new RegExp(`${escaped}${sep}`, "g"),
        insideAs: folder.as === "" ? "" : `${folder.as}${path.sep}`,
        // The folder itself, not a longer name that starts with it (/srv/specs2, /srv/specs.old).
        itself: new RegExp(`${escaped}(?![\\w-]|\\.[\\w-])`, "g"),
        itselfAs: folder.as === "" ? "." : folder.as,
      };
    });
  const text = (value: string): string => {
    let result = value;
    for (const rule of rules) result = result.replace(rule.inside, rule.insideAs).replace(rule.itself, rule.itselfAs);
    return result;
  };
  const value = <T>(input: T): T => {
    if (typeof input === "string") return text(input) as T;
    if (Array.isArray(input)) return input.map((item: unknown) => value(item)) as T;
    if (input !== null && typeof input === "object") return Object.fromEntries(Object.entries(input).map(([key, item]) => [key, value(item)])) as T;
    return input;
  };
  return { text, value };
}
