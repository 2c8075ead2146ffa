// list: the models the chain lists.
import { client, report } from './common.mjs'

await report(async () => {
  const listed = await client.list()
  return { models: listed.models.map((m) => m.model), sizes: listed.models.map((m) => m.size) }
})
