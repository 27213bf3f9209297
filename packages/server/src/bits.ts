/**
 * Boolean state packed into one number, one bit per flag: objects made per connection hold their
 * flags in one field instead of one each (8 bytes a field, per connection).
 * @module
 */

/** Whether `bit` is set in `flags`. */
export const has = (flags: number, bit: number): boolean => (flags & bit) !== 0;

/** `flags` with `bit` set or cleared. */
export const put = (flags: number, bit: number, on: boolean): number => (on ? flags | bit : flags & ~bit);
