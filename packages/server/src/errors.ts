/**
 * Errors on the wire: any thrown value becomes `{ code, reason }`; what is not a coded refusal is
 * a bug, whose details are logged and never sent.
 * @module
 */
import { TidingsError, type ErrorBody } from '@tidings/protocol';

/** Maps any thrown value to a wire error. */
export function errorBody(err: unknown): ErrorBody {
  if (err instanceof TidingsError) return err.toJSON();
  return { code: 'internal', reason: 'internal error' };
}
