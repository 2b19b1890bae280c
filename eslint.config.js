import neostandard from 'neostandard'

// neostandard: the `standard` style the code already follows (no semicolons, single quotes,
// a space before function parentheses), with its TypeScript rules for the .ts files.
export default [
  ...neostandard({
    ts: true,
    ignores: ['dist/**', 'dist-bench/**', 'coverage/**', '.tap/**', '.data/**', 'node_modules/**', 'test/artifacts/**']
  }),
  {
    rules: {
      // A TypeBox schema and its Static type share a name on purpose (routes/schemas.ts);
      // TypeScript itself reports real redeclarations.
      '@typescript-eslint/no-redeclare': 'off',
      // Long option objects group related properties per line (config, env maps).
      '@stylistic/object-property-newline': 'off',
      // `void promise()` marks a call whose promise handles its own errors and is not awaited on purpose.
      'no-void': ['error', { allowAsStatement: true }]
    }
  }
]
