// embed: two inputs, two vectors.
import { client, report } from './common.mjs'

await report(async () => {
  const embedded = await client.embed({ model: 'nomic-embed-text', input: ['a', 'b'] })
  return { model: embedded.model, count: embedded.embeddings.length, lengths: embedded.embeddings.map((e) => e.length), same: JSON.stringify(embedded.embeddings[0]) === JSON.stringify(embedded.embeddings[1]) }
})
