export * from './channel.js';
export * from './codec.js';
export * from './codes.js';
export * from './frames.js';
export * from './json.js';
export * from './position.js';
export * from './validate.js';
