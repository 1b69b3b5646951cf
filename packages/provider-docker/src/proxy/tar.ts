/**
 * The smallest tar the engine's archive endpoints need: one regular file in, one file out. The
 * proxy's configuration is a few kilobytes, so no streaming.
 */

const BLOCK = 512;

function writeString(header: Buffer, text: string, offset: number, length: number): void {
  header.write(text.slice(0, length), offset, length, "utf8");
}

function writeOctal(header: Buffer, value: number, offset: number, length: number): void {
  writeString(header, `${value.toString(8).padStart(length - 1, "0")}\0`, offset, length);
}

/** A ustar archive holding one regular file `name` (no folders) with `content` and `mode`. */
export function tarOneFile(name: string, content: string | Buffer, mode = 0o644): Buffer {
  if (Buffer.byteLength(name) > 100 || name.includes("/")) throw new Error(`tar entry name must be a plain name of at most 100 bytes: ${name}`);
  const data = typeof content === "string" ? Buffer.from(content, "utf8") : content;
  const header = Buffer.alloc(BLOCK, 0);
  writeString(header, name, 0, 100);
  writeOctal(header, mode, 100, 8);
  writeOctal(header, 0, 108, 8);
  writeOctal(header, 0, 116, 8);
  writeOctal(header, data.length, 124, 12);
  writeOctal(header, Math.floor(Date.now() / 1000), 136, 12);
  header.fill(" ", 148, 156);
  header.write("0", 156, "latin1");
  writeString(header, "ustar\0", 257, 6);
  writeString(header, "00", 263, 2);
  writeString(header, "root", 265, 32);
  writeString(header, "root", 297, 32);
  let sum = 0;
  for (const byte of header) sum += byte;
  writeString(header, `${sum.toString(8).padStart(6, "0")}\0 `, 148, 8);
  const padding = Buffer.alloc((BLOCK - (data.length % BLOCK)) % BLOCK, 0);
  return Buffer.concat([header, data, padding, Buffer.alloc(BLOCK * 2, 0)]);
}

/** The content of the first regular file in a tar archive whose base name is `name`; undefined if none. */
export function readFileFromTar(archive: Buffer, name: string): Buffer | undefined {
  let offset = 0;
  while (offset + BLOCK <= archive.length) {
    const header = archive.subarray(offset, offset + BLOCK);
    if (header.every((byte) => byte === 0)) return undefined;
    const entryName = header.subarray(0, 100).toString("utf8").replace(/\0.*$/s, "");
    const size = parseInt(header.subarray(124, 136).toString("latin1").replace(/\0.*$/s, "").trim() || "0", 8);
    const type = String.fromCharCode(header[156] ?? 0);
    const start = offset + BLOCK;
    if ((type === "0" || type === "\0") && entryName.replace(/^.*\//, "") === name) return archive.subarray(start, start + size);
    offset = start + Math.ceil(size / BLOCK) * BLOCK;
  }
  return undefined;
}
