/**
 * Words that mark a variable or build argument as holding a secret, matched against the name's
 * words (split at `_`, `-`, `.` and lower-to-upper case changes, compared in upper case).
 */
const SECRET_WORDS = new Set(["PASSWORD", "PASSWD", "PASSPHRASE", "SECRET", "SECRETS", "TOKEN", "TOKENS", "CREDENTIAL", "CREDENTIALS", "APIKEY", "PRIVATEKEY"]);

/** Words that, followed by `KEY`, mark a key that is a secret (`API_KEY`, `PRIVATE_KEY`); `KEY` alone is too common (`CACHE_KEY`). */
const KEY_QUALIFIERS = new Set(["API", "PRIVATE", "SECRET", "ACCESS", "SIGNING", "ENCRYPTION", "MASTER", "CLIENT", "LICENSE", "SESSION", "ACCOUNT", "SSH"]);

/**
 * Whether a name (an environment variable, a build argument) looks like it holds a secret:
 * one of its words is `PASSWORD`, `PASSWD`, `PASSPHRASE`, `SECRET`, `TOKEN`, `CREDENTIALS`,
 * `APIKEY` or `PRIVATEKEY`, or it has the word `KEY` right after `API`, `PRIVATE`, `SECRET`,
 * `ACCESS`, `SIGNING`, `ENCRYPTION`, `MASTER`, `CLIENT`, `LICENSE`, `SESSION`, `ACCOUNT` or `SSH`
 * (`NPM_TOKEN`, `DB_PASSWORD`, `stripeApiKey`, `AWS_SECRET_ACCESS_KEY`). Names such as
 * `CACHE_KEY`, `TOKENIZER_MODEL` or `PUBLIC_URL` do not.
 * A heuristic: it decides warnings (`env`) and refusals (build arguments), never what is safe.
 */
export function looksLikeSecretName(name: string): boolean {
  const words = name
    .replace(/([a-z0-9])([A-Z])/g, "$1_$2")
    .toUpperCase()
    .split(/[_.\-\s]+/)
    .filter((word) => word.length > 0);
  for (let index = 0; index < words.length; index++) {
    const word = words[index]!;
    if (SECRET_WORDS.has(word)) return true;
    if (word === "KEY" && index > 0 && KEY_QUALIFIERS.has(words[index - 1]!)) return true;
  }
  return false;
}
