// A stream aborted after its first part; then it stays alive (its connection too, if the
// abort did not close it) until stdin closes, so that the test sees what abort() did.
import { client, MODEL, report } from './common.mjs'

await report(async () => {
  const stream = await client.generate({ model: MODEL, prompt: 'long', stream: true, options: { num_predict: 100000 } })
  let parts = 0
  let error = null
  try {
    for await (const part of stream) {
      parts += 1
      if (parts === 1) stream.abort()
      if (part.done) break
    }
  } catch (err) {
    error = err.name
  }
  return { parts, error }
})
process.stdin.resume()
await new Promise((resolve) => process.stdin.on('end', resolve))
