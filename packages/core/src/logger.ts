/**
 * The logger Kiln writes diagnostics to. Core and providers never print; they log here (debug
 * detail) and emit events (progress). Compatible with `console`, pino and winston.
 */
export interface Logger {
  debug(message: string, fields?: Record<string, unknown>): void;
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
}

/** A {@link Logger} that drops everything: the default when none is given. */
export const silentLogger: Logger = {
  debug() {},
  info() {},
  warn() {},
  error() {},
};
