// generate: a bounded answer, streamed and not.
import { client, MODEL, report } from './common.mjs'

const request = { model: MODEL, prompt: 'hello', options: { num_predict: 7 } }
await report(async () => {
  const whole = await client.generate(request)
  const parts = []
  for await (const part of await client.generate({ ...request, stream: true })) parts.push(part)
  return {
    response: whole.response,
    streamed: parts.map((p) => p.response).join(''),
    done_reason: whole.done_reason,
    eval_count: whole.eval_count,
    has_context: Array.isArray(whole.context) && whole.context.length > 0,
  }
})
