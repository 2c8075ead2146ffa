// chat: streamed, then not, for the same question.
import { client, MODEL, report } from './common.mjs'

const messages = [{ role: 'user', content: 'why is the sky blue?' }]
await report(async () => {
  const parts = []
  for await (const part of await client.chat({ model: MODEL, messages, stream: true })) {
    parts.push(part)
  }
  const whole = await client.chat({ model: MODEL, messages })
  const last = parts[parts.length - 1]
  return {
    parts: parts.length,
    streamed: parts.map((p) => p.message.content).join(''),
    whole: whole.message.content,
    done: last.done,
    done_reason: last.done_reason,
    eval_count: last.eval_count,
    whole_eval_count: whole.eval_count,
  }
})
