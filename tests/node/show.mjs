// show: a model's details.
import { client, MODEL, report } from './common.mjs'

await report(async () => {
  const shown = await client.show({ model: MODEL })
  return { family: shown.details?.family ?? null, format: shown.details?.format ?? null, has_template: typeof shown.template === 'string', keys: Object.keys(shown).sort() }
})
