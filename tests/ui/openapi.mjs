// Validates an OpenAPI document (src/api/openapi.json) against the official
// OpenAPI 3.1 schema, with @seriousme/openapi-schema-validator (ajv, the
// specification's own JSON schemas, shipped in the package: no network).
// tests/ui.rs runs it; exit status 1 and the errors when the document is
// not valid OpenAPI 3.1.
import { Validator } from '@seriousme/openapi-schema-validator';

const path = process.argv[2];
const validator = new Validator({ strict: true });
const result = await validator.validate(path);
if (validator.version !== '3.1') {
  console.error(`${path}: OpenAPI ${validator.version}, expected 3.1`);
  process.exit(1);
}
if (!result.valid) {
  console.error(`${path} is not valid OpenAPI 3.1:\n${JSON.stringify(result.errors, null, 2)}`);
  process.exit(1);
}
console.log(`${path}: valid OpenAPI ${validator.version}`);
