// Type-aware lint for every package; `no-floating-promises` keeps every promise owned.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['**/dist/**', '**/node_modules/**', 'bench/results/**', '**/public/**', '.tmp/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: { allowDefaultProject: ['*.js', '*.mjs', 'bench/*.mjs', 'bench/*/*.mjs'] }, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/no-explicit-any': 'error',
      '@typescript-eslint/consistent-type-imports': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_' }],
    },
  },
  // Module boundaries (docs/architecture.md). Each block names what a layer must not import.
  {
    files: ['packages/protocol/src/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', { patterns: [{ group: ['node:*', '@tidings/*', 'ws', 'pino'], message: 'protocol has no dependencies and no I/O: it runs in browsers too' }] }],
    },
  },
  {
    files: ['packages/client/src/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', { patterns: [{ group: ['node:*', '@tidings/server', '@tidings/testing', 'ws'], message: 'the client runs in browsers: platform pieces are injected, and it never imports server code' }] }],
    },
  },
  {
    files: ['packages/server/src/brokers/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', { patterns: [{ group: ['../*'], message: 'brokers move opaque payloads and import nothing above them' }] }],
    },
  },
  {
    files: ['packages/server/src/transports/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              group: ['../session.js', '../hub.js', '../resume.js', '../brokers/*', '../commands.js', '../publisher.js', '../gateway.js', './*'],
              message: 'a transport turns HTTP into a Sink and talks to the core only through sink.ts (Connector, Attachment)',
            },
          ],
        },
      ],
    },
  },
  {
    files: ['packages/server/src/{hub,resume,encoded,session,sink,outbox,framing}.ts'],
    rules: {
      'no-restricted-imports': ['error', { patterns: [{ group: ['./transports/*', './gateway.js', './admission.js', './http/*'], message: 'the core (hub, resume, encoding, sessions) imports no transport' }] }],
    },
  },
  {
    files: ['packages/server/src/**/*.ts'],
    ignores: ['packages/server/src/gateway.ts', 'packages/server/src/index.ts', 'packages/server/src/transports/**', 'packages/server/src/brokers/**', 'packages/server/src/{hub,resume,encoded,session,sink,outbox,framing}.ts'],
    rules: {
      'no-restricted-imports': ['error', { patterns: [{ group: ['./transports/*', './brokers/memory.js'], message: 'only gateway.ts (the composition root) knows the concrete transports and broker' }] }],
    },
  },
  {
    files: ['**/*.js', '**/*.mjs'],
    ...tseslint.configs.disableTypeChecked,
  },
  {
    files: ['**/*.js', '**/*.mjs'],
    languageOptions: { globals: { process: 'readonly', console: 'readonly', setTimeout: 'readonly', clearTimeout: 'readonly', setInterval: 'readonly', clearInterval: 'readonly', Buffer: 'readonly', URL: 'readonly' } },
  },
);
